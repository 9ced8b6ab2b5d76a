"""The one server interceptor every Blueprint service runs with.

Per incoming call, for all four RPC kinds: continue the caller's trace (W3C
trace context from metadata) in a SERVER span, time the call into
`rpc_server_call_duration_seconds` with a trace-id exemplar, count it in
flight, record its deadline so outgoing calls inherit it, and turn a
domain error or a plain failure (`blueprint.errors`) into its status with rich
details through `mesh.errors.status_for` (anything else is a bug: INTERNAL, logged).
Request bytes that do not parse are INVALID_ARGUMENT (`decoding`), not grpcio's UNKNOWN.

Hand-written rather than opentelemetry-instrumentation-grpc: that package
emits the pre-1.38 RPC conventions and its aio streaming interceptors have
open bugs; doing tracing, metrics, deadline and error mapping in one wrapper
also costs one layer per call instead of three.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from blueprint.mesh.admission import Admission, Ticket
from blueprint.mesh.decoding import refuse_undecodable, refuse_undecodable_stream, tolerant
from blueprint.mesh.errors import status_for
from blueprint.mesh.resilience import deadlines
from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.metrics import RpcMetrics

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Server-side span status: these codes mean the server failed; the others
# (INVALID_ARGUMENT, NOT_FOUND, ...) mean the caller did, which is not a server error.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# Infrastructure RPCs: measured, but not traced (probes would drown real traces).
_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
# The request as the handler gets it, refusing bytes that did not parse (mesh.decoding).
_Decoded = Callable[[Any], Any]


def _code_set(context: Context) -> grpc.StatusCode | None:
    """The status the handler set on the context, if any (grpc.aio may give an int)."""
    code = context.code()
    if isinstance(code, int):
        return _CODES_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)
    return code


def _final_code(context: Context, raised: BaseException | None) -> grpc.StatusCode:
    code = _code_set(context)
    if code is not None and code is not grpc.StatusCode.OK:
        return code
    # grpc.aio ends a call whose caller gave up (deadline, cancel) by cancelling the
    # handler's task, and context.cancelled() stays False: the time left tells which.
    ended_by_caller = isinstance(raised, asyncio.CancelledError) or context.cancelled()
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= 0
    if raised is None:
        # An answer finished after the deadline reached nobody.
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.OK
    if ended_by_caller:
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


_CALLER_GONE = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})


class _CallScope:
    """What happens around one call, whatever its kind."""

    __slots__ = ("_context", "_deadline_token", "_method", "_owner", "_span", "_started")

    def __init__(self, owner: ServerInterceptor, method: str, context: Context) -> None:
        self._owner = owner
        self._method = method
        self._context = context
        self._span: trace.Span | None = None
        self._started = 0.0
        self._deadline_token: Any = None

    def enter(self) -> None:
        owner = self._owner
        self._started = time.monotonic()
        self._deadline_token = deadlines.set_incoming(self._context.time_remaining())
        if owner.metrics is not None:
            owner.metrics.server_in_flight.labels(self._method[1:]).inc()
        if owner.tracer is not None and not self._method.startswith(_UNTRACED_PREFIXES):
            parent = tracing.extract(self._context.invocation_metadata())
            self._span = owner.tracer.start_span(
                self._method[1:],
                context=parent,
                kind=SpanKind.SERVER,
                attributes={
                    "rpc.system.name": "grpc",
                    "rpc.method": self._method[1:],
                    "network.peer.address": self._context.peer(),
                },
            )

    def exit(self, raised: BaseException | None) -> grpc.StatusCode:
        owner = self._owner
        code = _final_code(self._context, raised)
        deadlines.reset_incoming(self._deadline_token)
        span = self._span
        if owner.metrics is not None:
            exemplar = None
            if span is not None and span.get_span_context().trace_flags.sampled:
                exemplar = {"trace_id": format(span.get_span_context().trace_id, "032x")}
            owner.metrics.server_in_flight.labels(self._method[1:]).dec()
            owner.metrics.server_duration.labels("grpc", self._method[1:], code.name).observe(
                time.monotonic() - self._started, exemplar
            )
        if span is not None:
            span.set_attribute("rpc.response.status_code", code.name)
            if code in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
        return code

    @property
    def span(self) -> trace.Span | None:
        return self._span


async def _map_error(context: Context, error: Exception) -> None:
    status = status_for(error)
    if status is not None:
        await context.abort_with_status(status)  # type: ignore[attr-defined]
    chosen = _code_set(context)
    if chosen is not None and chosen is not grpc.StatusCode.OK:
        # The handler chose its status before raising: generated base classes answer a
        # method nobody implemented (grpc's async health servicer lacks List) this way.
        await context.abort(chosen, context.details() or "")
    log.exception("unhandled error in handler", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        tracer: Tracer | None,
        metrics: RpcMetrics | None,
        admission: Admission | None = None,
    ) -> None:
        self.tracer = tracer
        self.metrics = metrics
        self.admission = admission

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
        method: str = handler_call_details.method
        options = {
            "request_deserializer": tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            # Only unary calls are shed: a stream's lifetime says nothing about load.
            admission = self.admission if self.admission and Admission.applies_to(method) else None
            return grpc.unary_unary_rpc_method_handler(
                self._unary_response(method, handler.unary_unary, refuse_undecodable, admission),
                **options,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_response(method, handler.stream_unary, refuse_undecodable_stream),
                **options,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream, refuse_undecodable), **options
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, handler.stream_stream, refuse_undecodable_stream), **options
        )

    def _streaming(self, method: str, behaviour: Any, decoded: _Decoded) -> Any:
        # A streaming handler either yields its replies or is a coroutine that sends them
        # with context.write() (grpc's async health Watch); each is wrapped as what it is.
        if inspect.isasyncgenfunction(behaviour):
            return self._stream_response(method, behaviour, decoded)
        return self._unary_response(method, behaviour, decoded)

    def _unary_response(
        self, method: str, behaviour: Any, decoded: _Decoded, admission: Admission | None = None
    ) -> Any:
        async def handle(request: Any, context: Context) -> Any:
            scope = _CallScope(self, method, context)
            scope.enter()
            raised: BaseException | None = None
            ticket: Ticket | None = None
            try:
                with trace.use_span(scope.span or trace.INVALID_SPAN, end_on_exit=False):
                    if admission is not None:
                        ticket = await admission.enter(method, context)
                    return await behaviour(decoded(request), context)
            except Exception as error:
                raised = error
                if _is_abort(error):
                    raise
                if _caller_gone(error):
                    raised = asyncio.CancelledError()
                    raise raised from error
                await _map_error(context, error)
            except BaseException as error:  # cancellation: the call ends, recorded as such
                raised = error
                raise
            finally:
                code = scope.exit(raised)
                if ticket is not None and admission is not None:
                    admission.leave(ticket, dropped=code in _CALLER_GONE)

        return handle

    def _stream_response(self, method: str, behaviour: Any, decoded: _Decoded) -> Any:
        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            scope = _CallScope(self, method, context)
            scope.enter()
            raised: BaseException | None = None
            try:
                with trace.use_span(scope.span or trace.INVALID_SPAN, end_on_exit=False):
                    async for response in behaviour(decoded(request), context):
                        yield response
            except Exception as error:
                raised = error
                if _is_abort(error):
                    raise
                if _caller_gone(error):
                    raised = asyncio.CancelledError()
                    raise raised from error
                await _map_error(context, error)
            except BaseException as error:
                raised = error
                raise
            finally:
                scope.exit(raised)

        return handle


def _is_abort(error: BaseException) -> bool:
    # grpc.aio raises its own AbortError out of context.abort(); it must pass through.
    return type(error).__name__ == "AbortError"


def _caller_gone(error: BaseException) -> bool:
    # grpc.aio could not send on the call (an abort or a reply after the caller's deadline
    # or cancel): the call is over, ended by its caller, and nothing more can be sent.
    return type(error).__name__ == "ExecuteBatchError"
