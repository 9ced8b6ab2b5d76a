"""Probing one pod over gRPC the way a client would: health, services, a smoke call.

The rollout reaches each pod through `kubectl port-forward`, so the address here
is local; what answers is the pod's real server. A service is asked for health
(the server as a whole and each of its gRPC services), for the services it lists
through reflection, and for the read-only smoke call it declares in the catalog;
a worker (no catalog entry) for its health only.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blueprint import catalog


def declared_services(workload: str) -> Sequence[str]:
    """The gRPC services `workload` must serve; none known for a name outside the catalog."""
    try:
        return catalog.spec(workload).grpc_services
    except catalog.UnknownService:
        return ()


def _listed_services(channel: grpc.Channel, timeout: float) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: set[str] = set()
    for response in stub.ServerReflectionInfo(iter([request]), timeout=timeout):
        names.update(s.name for s in response.list_services_response.service)
    return names


def smoke(channel: grpc.Channel, call: catalog.SmokeCall, timeout: float) -> str | None:
    """Make the declared call; a problem, or None when it answered as a healthy pod does."""
    service_name, _, method_name = call.method.strip("/").partition("/")
    method = descriptor_pool.Default().FindServiceByName(service_name).methods_by_name[method_name]
    request_class = message_factory.GetMessageClass(method.input_type)
    request = json_format.ParseDict(dict(call.request), request_class())
    response_class = message_factory.GetMessageClass(method.output_type)
    stub = channel.unary_unary(
        call.method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        stub(request, timeout=timeout)
    except grpc.RpcError as error:
        if not isinstance(error, grpc.Call):
            raise
        if error.code().name in call.answers:
            return None
        return f"{method_name} answered {error.code().name}: {error.details()}"
    return None if "OK" in call.answers else f"{method_name} answered OK, not {call.answers}"


def probe(address: str, workload: str, *, timeout: float = 5.0) -> list[str]:
    """What is wrong with `workload` at `address`; empty when it is healthy and answers."""
    declared = declared_services(workload)
    # The address is a local port-forward: an operator's http_proxy must not capture it.
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return [f"no gRPC connection to {address} within {timeout:g}s"]
        problems = []
        try:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", *declared):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=timeout)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                    problems.append(f"health{f' of {name}' if name else ''} is {status}")
            if declared:
                missing = set(declared) - _listed_services(channel, timeout)
                if missing:
                    problems.append(f"does not serve {', '.join(sorted(missing))}")
                found = smoke(channel, catalog.smoke_call(workload), timeout)
                if found:
                    problems.append(found)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            problems.append(f"{code.name if code else 'RPC'} failed: {details}")
        return problems
