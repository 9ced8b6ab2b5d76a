"""`blueprint call SERVICE METHOD JSON`: any method, through discovery and the balancer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor, descriptor_pool, json_format, message, message_factory
from google.rpc import error_details_pb2, status_pb2

from blueprint import catalog
from blueprint.mesh.client import MeshClient


class CallError(Exception):
    """A mistake in what the user asked for; one line says which."""


@dataclass(frozen=True)
class Target:
    path: str  # /package.Service/Method
    method: descriptor.MethodDescriptor
    request_class: type[message.Message]
    response_class: type[message.Message]


def resolve(service: str, method_name: str) -> Target:
    try:
        spec = catalog.spec(service)
    except catalog.UnknownService as error:
        raise CallError(str(error)) from None
    pool = descriptor_pool.Default()
    for full_name in spec.grpc_services:
        grpc_service = pool.FindServiceByName(full_name)
        method = grpc_service.methods_by_name.get(method_name)
        if method is not None:
            return Target(
                path=f"/{grpc_service.full_name}/{method.name}",
                method=method,
                request_class=message_factory.GetMessageClass(method.input_type),
                response_class=message_factory.GetMessageClass(method.output_type),
            )
    known = sorted(
        name for full in spec.grpc_services for name in pool.FindServiceByName(full).methods_by_name
    )
    raise CallError(
        f"unknown method {method_name!r} of service {service!r}; methods: {', '.join(known)}"
    )


def parse_request(target: Target, body: str) -> message.Message:
    try:
        data = json.loads(body)
    except json.JSONDecodeError as error:
        raise CallError(f"malformed JSON: {error}") from None
    if not isinstance(data, dict):
        raise CallError("the request must be a JSON object")
    request = target.request_class()
    try:
        json_format.ParseDict(data, request)
    except json_format.ParseError as error:
        # json_format names the field; its hint of the known fields goes on the same line.
        reason = " ".join(str(error).split())
        raise CallError(f"invalid request for {target.method.full_name}: {reason}") from None
    return request


def to_json(response: message.Message) -> str:
    return json_format.MessageToJson(
        response, indent=None, always_print_fields_with_no_presence=True
    )


def describe_error(error: grpc.aio.AioRpcError) -> str:
    """The status, and the field violations when the server sent google.rpc.BadRequest."""
    lines = [f"{error.code().name}: {error.details()}"]
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                lines += [
                    f"  field {v.field}: {v.description}" for v in bad_request.field_violations
                ]
    return "\n".join(lines)


async def call(
    mesh: MeshClient,
    service: str,
    target: Target,
    request: message.Message,
    *,
    timeout: float,
    metadata: Sequence[tuple[str, str]] = (),
) -> AsyncIterator[message.Message]:
    """Responses as they come: one for unary methods, several for server streams."""
    if target.method.client_streaming:
        raise CallError(f"{target.method.full_name} streams requests; `call` sends exactly one")
    if not await mesh.wait_for_endpoints(service, timeout):
        raise CallError(
            f"no endpoints of service {service!r} in discovery; is `blueprint up` running?"
        )
    channel = mesh.channel(service)
    kind = "unary_stream" if target.method.server_streaming else "unary_unary"
    multicallable: Any = getattr(channel, kind)(
        target.path,
        request_serializer=target.request_class.SerializeToString,
        response_deserializer=target.response_class.FromString,
    )
    if target.method.server_streaming:
        async for response in multicallable(request, timeout=timeout, metadata=metadata):
            yield response
    else:
        yield await multicallable(request, timeout=timeout, metadata=metadata)
