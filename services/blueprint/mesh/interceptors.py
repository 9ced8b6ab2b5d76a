"""The runtime's per-call work as a `grpc.aio.ServerInterceptor`, for servers built
outside `blueprint.mesh.server` (test harnesses that assemble their own).

The runtime itself wraps handlers at registration (`mesh.handlers.WrappingServer`);
this adapter does the same wrapping on a method's first call and reuses it after, so
both give every call the same treatment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import grpc.aio
from opentelemetry.trace import Tracer

from blueprint.mesh.handlers import Admission, CallWrapper, Handler
from blueprint.mesh.telemetry.metrics import RpcMetrics


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        tracer: Tracer | None,
        metrics: RpcMetrics | None,
        admission: Admission | None = None,
    ) -> None:
        self._wrapper = CallWrapper(tracer, metrics, admission=admission)
        # path -> (the handler grpc found, its wrapped form)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        path: str = handler_call_details.method
        known = self._wrapped.get(path)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrapper.wrap(path, handler)
        self._wrapped[path] = (handler, wrapped)
        return wrapped
