"""What every incoming call runs through, wrapped around each method handler once.

Per incoming call, for all four RPC kinds: continue the caller's trace (W3C
trace context from metadata) in a SERVER span, time the call into
`rpc_server_call_duration_seconds` with a trace-id exemplar, count it in
flight, record its deadline so outgoing calls inherit it, and turn a
domain error or a plain failure (`blueprint.errors`) into its status with rich
details through `mesh.errors.status_for` (anything else is a bug: INTERNAL, logged).
Request bytes that do not parse are INVALID_ARGUMENT (`decoding`), not grpcio's UNKNOWN.

Why at registration and not as a `grpc.aio.ServerInterceptor`: an interceptor runs for
every call and has to build a new method handler (a namedtuple and several closures)
each time. Wrapping each handler when it is registered leaves per call only the work
itself, with the method's name, metric children and span decision settled in advance
(`_Method`). `WrappingServer` is the registration point: the runtime hands it to
`add_*_to_server` functions, which then register wrapped handlers without knowing it.

Hand-written rather than opentelemetry-instrumentation-grpc: that package emits the
pre-1.38 RPC conventions and its aio streaming interceptors have open bugs.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeAlias

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from blueprint.mesh.decoding import refuse_undecodable, refuse_undecodable_stream, tolerant
from blueprint.mesh.errors import status_for
from blueprint.mesh.resilience import deadlines
from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.metrics import InFlight, RpcMetrics, in_flight

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Metadata = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only

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
_OK = grpc.StatusCode.OK
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
_CANCELLED = grpc.StatusCode.CANCELLED
_UNKNOWN = grpc.StatusCode.UNKNOWN
_monotonic = time.monotonic
# A call that brings no trace context starts a trace, whatever the task's context holds.
_NO_PARENT = otel_context.Context()
# The request as the handler gets it, refusing bytes that did not parse (mesh.decoding).
_Decoded = Callable[[Any], Any]


class Permit(Protocol):
    def release(self, latency_seconds: float, code: grpc.StatusCode) -> None: ...


class Admission(Protocol):
    """Decides, before a unary handler runs, whether the call may start (load shedding,
    `mesh.admission`); it may make the call wait for a slot.

    `admit_now` answers the common case without awaiting (None: not at once); `admit`
    decides the rest, and aborts the call to refuse it. The permit either returns is
    released once the call has ended, with its latency and final status. `governs`
    is asked once per method, when its handler is wrapped.
    """

    def governs(self, method: str) -> bool: ...

    def admit_now(
        self, method: str, remaining: float | None, metadata: Metadata | None
    ) -> Permit | None: ...

    async def admit(self, method: str, context: Context) -> Permit: ...


def _code_set(context: Context) -> grpc.StatusCode | None:
    """The status the handler set on the context, if any (grpc.aio may give an int)."""
    code = context.code()
    if isinstance(code, int):
        return _CODES_BY_VALUE.get(code, _UNKNOWN)
    return code


def _final_code(context: Context, raised: BaseException | None) -> grpc.StatusCode:
    code = _code_set(context)
    if code is not None and code is not _OK:
        return code
    # grpc.aio ends a call whose caller gave up (deadline, cancel) by cancelling the
    # handler's task, and context.cancelled() stays False: the time left tells which.
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= 0
    if raised is None:
        # An answer finished after the deadline reached nobody.
        return _DEADLINE_EXCEEDED if expired else _OK
    if isinstance(raised, asyncio.CancelledError) or context.cancelled():
        return _DEADLINE_EXCEEDED if expired else _CANCELLED
    return _UNKNOWN


class _Call:
    """One call in progress: what `_Method.begin` started and `_Method.end` finishes."""

    __slots__ = (
        "context",
        "deadline_token",
        "metadata",
        "otel_token",
        "permit",
        "remaining",
        "span",
        "started",
    )

    def __init__(self, context: Context, started: float, remaining: float | None) -> None:
        self.context = context
        self.started = started
        self.remaining = remaining
        self.deadline_token = deadlines.set_incoming(remaining, now=started)
        # Read once, for the span and admission both (grpc builds it anew on each ask).
        self.metadata: Metadata | None = None
        self.span: trace.Span | None = None
        self.otel_token: contextvars.Token[otel_context.Context] | None = None
        self.permit: Permit | None = None


class _Method:
    """One method's fixed part, settled at registration: its name, whether it is traced
    and shed, and its metric children (bound on first use, so /metrics lists only
    methods called)."""

    __slots__ = (
        "_durations",
        "_in_flight",
        "_metrics",
        "_ok_duration",
        "_reads_metadata",
        "_roots_sampled",
        "_tracer",
        "admission",
        "name",
    )

    def __init__(
        self,
        path: str,
        tracer: Tracer | None,
        metrics: RpcMetrics | None,
        roots_sampled: bool,
        admission: Admission | None,
    ) -> None:
        self.name = path[1:]
        self._tracer = None if path.startswith(_UNTRACED_PREFIXES) else tracer
        self._roots_sampled = roots_sampled
        self._metrics = metrics
        governed = admission is not None and admission.governs(self.name)
        self.admission = admission if governed else None
        self._reads_metadata = self._tracer is not None or self.admission is not None
        self._in_flight: InFlight | None = None
        # The duration children by final status; OK's apart, as nearly every call ends so
        # (a StatusCode's hash is computed in Python, on every lookup).
        self._ok_duration: Any = None
        self._durations: dict[grpc.StatusCode, Any] = {}

    def begin(self, context: Context) -> _Call:
        call = _Call(context, _monotonic(), context.time_remaining())
        if self._reads_metadata:
            call.metadata = context.invocation_metadata()
        if self._metrics is not None:
            if self._in_flight is None:
                self._in_flight = in_flight(self._metrics.server_in_flight.labels(self.name))
            self._in_flight.value += 1
        if self._tracer is not None:
            span = self._start_span(self._tracer, context, call.metadata)
            call.span = span
            if span.is_recording():
                # use_span records the handler's exception on a span that keeps it.
                return call
            # Set in an empty context: a call's context starts from its caller's, not
            # from whatever the server's task context happened to hold.
            call.otel_token = otel_context.attach(trace.set_span_in_context(span, _NO_PARENT))
        return call

    def _start_span(
        self, tracer: Tracer, context: Context, metadata: Metadata | None
    ) -> trace.Span:
        if not tracing.carries_context(metadata):
            if not self._roots_sampled:  # the usual case when tracing is sampled down
                return tracing.unsampled_root()
            parent = _NO_PARENT
        else:
            parent = tracing.extract(metadata)
        # The sampler's answer when it is known without asking it: most calls are
        # unsampled, and then a span is two ids, not the SDK's work.
        parent_span = (
            trace.INVALID_SPAN_CONTEXT if parent is _NO_PARENT else tracing.parent_of(parent)
        )
        unsampled = tracing.unsampled_span(parent_span, self._roots_sampled)
        if unsampled is not None:
            return unsampled
        return tracer.start_span(
            self.name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system.name": "grpc",
                "rpc.method": self.name,
                "network.peer.address": context.peer(),
            },
        )

    def end(self, call: _Call, raised: BaseException | None) -> None:
        code = _final_code(call.context, raised)
        elapsed = _monotonic() - call.started
        if call.permit is not None:
            call.permit.release(elapsed, code)
        deadlines.reset_incoming(call.deadline_token)
        if call.otel_token is not None:
            otel_context.detach(call.otel_token)
        # A span that records is a sampled one (parent-based sampling); begin attached
        # only those that do not.
        span = call.span if call.otel_token is None else None
        if self._metrics is not None:
            exemplar = None
            if span is not None:
                exemplar = {"trace_id": format(span.get_span_context().trace_id, "032x")}
            assert self._in_flight is not None  # bound by the call's start
            self._in_flight.value -= 1
            duration = self._ok_duration if code is _OK else self._durations.get(code)
            if duration is None:
                duration = self._metrics.server_duration.labels("grpc", self.name, code.name)
                self._durations[code] = duration
                if code is _OK:
                    self._ok_duration = duration
            duration.observe(elapsed, exemplar)
        if span is not None:
            span.set_attribute("rpc.response.status_code", code.name)
            if code in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()


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


def _is_abort(error: BaseException) -> bool:
    # grpc.aio raises its own AbortError out of context.abort(); it must pass through.
    return type(error).__name__ == "AbortError"


def _caller_gone(error: BaseException) -> bool:
    # grpc.aio could not send on the call (an abort or a reply after the caller's deadline
    # or cancel): the call is over, ended by its caller, and nothing more can be sent.
    return type(error).__name__ == "ExecuteBatchError"


class CallWrapper:
    """Wraps method handlers in the per-call work above; one per server."""

    def __init__(
        self,
        tracer: Tracer | None,
        metrics: RpcMetrics | None,
        *,
        roots_sampled: bool = True,
        admission: Admission | None = None,
    ) -> None:
        """`roots_sampled`: False when the tracer's sampler never samples a call that
        arrives without a sampled parent (BLUEPRINT_TRACE_SAMPLING_RATIO=0)."""
        self.tracer = tracer
        self.metrics = metrics
        self.roots_sampled = roots_sampled
        self.admission = admission

    def wrap(self, path: str, handler: Handler) -> Handler:
        """`handler` for the method at `path` ("/pkg.Service/Method"), wrapped."""
        method = _Method(path, self.tracer, self.metrics, self.roots_sampled, self.admission)
        options = {
            "request_deserializer": tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            # Only unary calls may be shed: a stream's lifetime says nothing about load.
            return grpc.unary_unary_rpc_method_handler(
                self._unary_response(method, handler.unary_unary, refuse_undecodable, shed=True),
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

    def _streaming(self, method: _Method, behaviour: Any, decoded: _Decoded) -> Any:
        # A streaming handler either yields its replies or is a coroutine that sends them
        # with context.write() (grpc's async health Watch); each is wrapped as what it is.
        if inspect.isasyncgenfunction(behaviour):
            return self._stream_response(method, behaviour, decoded)
        return self._unary_response(method, behaviour, decoded)

    def _unary_response(
        self, method: _Method, behaviour: Any, decoded: _Decoded, *, shed: bool = False
    ) -> Any:
        # The one place for load shedding: before the handler starts; `method.end`
        # releases the permit with the call's latency and final status.
        admission = method.admission if shed else None

        async def handle(request: Any, context: Context) -> Any:
            call = method.begin(context)
            raised: BaseException | None = None
            try:
                if admission is not None:
                    permit = admission.admit_now(method.name, call.remaining, call.metadata)
                    if permit is None:
                        permit = await admission.admit(method.name, context)
                    call.permit = permit
                if call.otel_token is not None or call.span is None:
                    return await behaviour(decoded(request), context)
                with trace.use_span(call.span, end_on_exit=False):
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
                method.end(call, raised)

        return handle

    def _stream_response(self, method: _Method, behaviour: Any, decoded: _Decoded) -> Any:
        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            call = method.begin(context)
            raised: BaseException | None = None
            try:
                if call.otel_token is not None or call.span is None:
                    async for response in behaviour(decoded(request), context):
                        yield response
                else:
                    with trace.use_span(call.span, end_on_exit=False):
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
                method.end(call, raised)

        return handle


class _WrappedGenericHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler of unknown shape: each handler it answers is wrapped once."""

    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any], server: WrappingServer) -> None:
        self._inner = inner
        self._server = server

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._server.wrapped(handler_call_details.method, handler)


class WrappingServer(grpc.aio.Server):
    """A `grpc.aio.Server` whose registered handlers come out wrapped by `wrapper`.

    Generated `add_*_to_server` functions register a service twice, as a generic
    handler and as registered method handlers. Only the generic handler reaches
    grpc: its asyncio server (grpcio 1.85) accepts calls to registered methods in
    one task per method and pays a task and an `asyncio.wait` per call for them
    (grpc/grpc#43461); for diag's methods alone that was 30,000 more instructions
    a call (`python -m bench.instructions`), for health's three 15,000. A service
    registered only through `add_registered_method_handlers` gets a generic
    handler instead. Everything else is the server's own.
    """

    def __init__(self, server: grpc.aio.Server, wrapper: CallWrapper) -> None:
        self.server = server
        self._wrapper = wrapper
        # path -> (the handler registered, its wrapped form)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}
        # Services that grpc already serves through a generic handler of its own table.
        self._generic_services: set[str] = set()

    def wrapped(self, path: str, handler: Handler) -> Handler:
        known = self._wrapped.get(path)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrapper.wrap(path, handler)
        self._wrapped[path] = (handler, wrapped)
        return wrapped

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self.server.add_generic_rpc_handlers([self._wrap_generic(h) for h in generic_rpc_handlers])

    def _wrap_generic(
        self, handler: grpc.GenericRpcHandler[Any, Any]
    ) -> grpc.GenericRpcHandler[Any, Any]:
        # grpc's own table (method_handlers_generic_handler, what generated code
        # registers) is rebuilt wrapped; any other kind is wrapped as it answers.
        service = getattr(handler, "_name", None)
        table = getattr(handler, "_method_handlers", None)
        if not (isinstance(service, str) and isinstance(table, dict)):
            return _WrappedGenericHandler(handler, self)
        prefix = f"/{service}/"
        self._generic_services.add(service)
        return grpc.method_handlers_generic_handler(
            service,
            {path.removeprefix(prefix): self.wrapped(path, h) for path, h in table.items()},
        )

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        # Served through a generic handler, never grpc's registered methods (see above).
        if service_name in self._generic_services:
            return
        self.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service_name, method_handlers)]
        )

    def add_insecure_port(self, address: str) -> int:
        return self.server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self.server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self.server.wait_for_termination(timeout)
