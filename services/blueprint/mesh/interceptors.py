"""Server interceptors every Blueprint service runs with."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from blueprint.mesh.errors import DomainError

log = logging.getLogger(__name__)

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Turns DomainErrors into their statuses and logs anything else as a bug (INTERNAL).

    Only unary responses are wrapped here; streaming handlers raise DomainError
    before their first message, which grpcio reports as UNKNOWN, so the
    streaming wrapper aborts with the mapped status too.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _map_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _map_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _map_unary(behaviour: Any) -> Any:
    async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behaviour(request, context)
        except DomainError as error:
            await context.abort_with_status(error.to_status())  # type: ignore[attr-defined]

    return mapped


def _map_stream(behaviour: Any) -> Any:
    async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            async for response in behaviour(request, context):
                yield response
        except DomainError as error:
            await context.abort_with_status(error.to_status())  # type: ignore[attr-defined]

    return mapped
