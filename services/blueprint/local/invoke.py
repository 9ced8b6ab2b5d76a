"""`blueprint call SERVICE METHOD [JSON|@FILE|-]`: any method, through discovery and the balancer.

The request comes as an argument, from a file (`@FILE`), or from stdin (`-`, `@`, or no
argument when stdin is not a terminal), like grpcurl's `-d @`: a shell argument is
capped near 128 KiB, a file or a pipe is not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import grpc
import grpc.aio
from google.protobuf import descriptor, json_format, message, message_factory
from google.rpc import error_details_pb2, status_pb2

from blueprint import catalog

if TYPE_CHECKING:
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
        grpc_services = catalog.api(service)
    except catalog.UnknownService as error:
        raise CallError(str(error)) from None
    for grpc_service in grpc_services:
        method = grpc_service.methods_by_name.get(method_name)
        if method is not None:
            return Target(
                path=f"/{grpc_service.full_name}/{method.name}",
                method=method,
                request_class=message_factory.GetMessageClass(method.input_type),
                response_class=message_factory.GetMessageClass(method.output_type),
            )
    known = sorted(name for grpc_service in grpc_services for name in grpc_service.methods_by_name)
    raise CallError(
        f"unknown method {method_name!r} of service {service!r}; methods: {', '.join(known)}"
    )


def read_body(argument: str | None, stdin: TextIO) -> str:
    """The request's JSON text, from the argument, a file or stdin; empty input means {}."""
    if argument is None:
        argument = "-" if not stdin.isatty() else "{}"
    if argument in ("-", "@", "@-"):
        text = stdin.read()
    elif argument.startswith("@"):
        try:
            text = Path(argument[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CallError(f"cannot read the request from {argument[1:]!r}: {error}") from None
    else:
        text = argument
    return text if text.strip() else "{}"


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
