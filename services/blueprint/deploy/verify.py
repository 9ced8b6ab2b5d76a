"""Probing one gRPC address the way a client would: health, then a smoke call.

The rollout reaches a preview Service through `kubectl port-forward`, so the
address here is local; what answers is a preview pod's real server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blueprint import catalog
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc

SMOKE_PAYLOAD = "blueprint rollout verify"

Smoke = Callable[[grpc.Channel, float], str | None]  # a problem, or None when it went well


def _echo(channel: grpc.Channel, timeout: float) -> str | None:
    stub = diag_pb2_grpc.DiagnosticsStub(channel)
    reply = stub.Echo(diag_pb2.EchoRequest(payload=SMOKE_PAYLOAD), timeout=timeout)
    if reply.payload != SMOKE_PAYLOAD:
        return f"Echo answered {reply.payload!r}"
    return None


# A cheap, side-effect-free call per service; others get the reflection check only.
SMOKE_CALLS: dict[str, Smoke] = {"diag": _echo}


def declared_services(service: str) -> Sequence[str]:
    """The gRPC services `service` must serve; none known for a name outside the catalog."""
    try:
        return catalog.spec(service).grpc_services
    except catalog.UnknownService:
        return ()


def _listed_services(channel: grpc.Channel, timeout: float) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: set[str] = set()
    for response in stub.ServerReflectionInfo(iter([request]), timeout=timeout):
        names.update(s.name for s in response.list_services_response.service)
    return names


def probe(address: str, service: str, *, timeout: float = 5.0) -> list[str]:
    """What is wrong with `service` at `address`; empty when it is healthy and answers."""
    declared = declared_services(service)
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
            missing = set(declared) - _listed_services(channel, timeout)
            if missing:
                problems.append(f"does not serve {', '.join(sorted(missing))}")
            smoke = SMOKE_CALLS.get(service)
            found = smoke(channel, timeout) if smoke is not None else None
            if found:
                problems.append(found)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            problems.append(f"{code.name if code else 'RPC'} failed: {details}")
        return problems
