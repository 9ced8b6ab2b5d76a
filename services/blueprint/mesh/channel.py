"""A channel-shaped router: generated stubs call it, and each call picks an endpoint.

grpcio accepts no load-balancing policy written in Python, so the mesh hands
stubs this object instead of a `grpc.aio.Channel`. Its multicallables run each
call through the client's layers, outermost first:

    deadline (the incoming call's, minus elapsed)  -> bulkhead (max in flight)
    -> adaptive throttle (refuse locally while the target refuses)
    -> span + metrics + trace context              -> retry policy and budget
    -> balancer pick among healthy endpoints       -> that endpoint's warm channel

and feed every attempt's outcome back to the balancer's load signal and the
endpoint's breaker and outlier tracker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from blueprint.mesh import idempotency
from blueprint.mesh.endpoint import Endpoint
from blueprint.mesh.methods import is_idempotent
from blueprint.mesh.pool import EndpointPool
from blueprint.mesh.resilience import deadlines
from blueprint.mesh.resilience.retry import STATUS_DETAILS_HEADER, RetryBudget, RetryPolicy
from blueprint.mesh.resilience.throttle import AdaptiveThrottle
from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.metrics import InFlight, Metrics, in_flight

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None
Metadata = Any  # grpc.aio.Metadata or a sequence of (key, value) pairs


# ErrorInfo reason of a call the client refused itself (adaptive throttling): the
# target never saw it. Not the server's OVERLOADED: it was not shed, and is not retried.
CLIENT_THROTTLED_REASON = "CLIENT_THROTTLED"
# Answers that say the target did not serve a call: it refused it (shed, quota), or let
# it wait past its deadline (a queue in front of a saturated server).
_NOT_ACCEPTED = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED})
_OK = grpc.StatusCode.OK
# The timeout an attempt was sent with, in ms: the server subtracts the time it has left
# to learn how long the call waited unseen in its transport (blueprint.mesh.admission).
SENT_TIMEOUT_HEADER = "x-blueprint-sent-timeout-ms"


def _with_sent_timeout(metadata: Metadata | None, seconds: float) -> list[tuple[str, Any]]:
    entry = (SENT_TIMEOUT_HEADER, str(round(seconds * 1000)))
    return [*(metadata or ()), entry]


def _error(
    code: grpc.StatusCode, details: str, trailers: grpc.aio.Metadata | None = None
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), trailers or grpc.aio.Metadata(), details, None
    )


def _throttled_error(target: str, throttle: AdaptiveThrottle) -> grpc.aio.AioRpcError:
    """RESOURCE_EXHAUSTED raised in this process, marked as such in text and details."""
    requests, accepts = throttle.requests, throttle.accepts
    message = (
        f"throttled by the client: {target!r} accepted {accepts} of the last {requests}"
        " calls, so this one was not sent"
    )
    info = error_details_pb2.ErrorInfo(
        reason=CLIENT_THROTTLED_REASON,
        domain="blueprint",
        metadata={"target": target, "requests": str(requests), "accepts": str(accepts)},
    )
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=message)
    status.details.add().Pack(info)
    trailers = grpc.aio.Metadata((STATUS_DETAILS_HEADER, status.SerializeToString()))
    return _error(grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailers)


@dataclass(frozen=True)
class CallPolicy:
    """How calls to one target behave; built from settings by the MeshClient."""

    default_timeout: float
    retry: RetryPolicy
    budget: RetryBudget
    max_in_flight: int
    hedge_after: float | None = None
    # Client-side adaptive throttling of this target; None: off.
    throttle: AdaptiveThrottle | None = None
    # Per method path ("pkg.Service/Method"), for calls that bring no deadline.
    method_timeouts: Mapping[str, float] = field(default_factory=dict)

    def default_timeout_for(self, path: str) -> float:
        return self.method_timeouts.get(path[1:], self.default_timeout)


class CallRouter:
    """Per-target-service call logic shared by all multicallables of a MeshChannel."""

    def __init__(
        self,
        pool: EndpointPool,
        policy: CallPolicy,
        *,
        hash_key_header: str,
        own_address: bytes,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
        roots_sampled: bool = True,
    ) -> None:
        """`roots_sampled`: False when the tracer's sampler never samples a call made
        outside a sampled trace (BLUEPRINT_TRACE_SAMPLING_RATIO=0)."""
        self.pool = pool
        self.policy = policy
        self._target = pool.service
        self._hash_key_header = hash_key_header
        self._own_address = own_address
        self._wants_key = pool.balancer.name == "consistent_hash"
        self._tracer = tracer
        self._roots_sampled = roots_sampled
        self._metrics = metrics
        self.in_flight = 0
        # Metric children, bound on first use: labels() per call costs a lock and a lookup.
        self._in_flight_gauge: InFlight | None = None
        # Keyed by path for OK, by (path, code) otherwise: nearly every call is OK, and a
        # StatusCode's hash is computed in Python.
        self._durations: dict[str | tuple[str, grpc.StatusCode], Any] = {}

    # -- per call -----------------------------------------------------------------

    def _key(self, metadata: Metadata | None) -> bytes | None:
        """Affinity key: the hash-key header if the caller set one, else the caller's address."""
        if not self._wants_key:
            return None
        for name, value in metadata or ():
            if name == self._hash_key_header:
                return value if isinstance(value, bytes) else str(value).encode()
        return self._own_address

    def _begin(self, path: str, timeout: float | None) -> float:
        """Deadline and bulkhead, before anything is sent; returns the absolute deadline."""
        seconds = deadlines.outgoing_timeout(timeout, self.policy.default_timeout_for(path))
        if seconds <= 0:
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "the incoming call's deadline passed")
        if self.in_flight >= self.policy.max_in_flight:
            if self._metrics is not None:
                self._metrics.mesh.bulkhead_rejections.labels(self._target).inc()
            raise _error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {self.policy.max_in_flight} calls in flight to {self._target!r}",
            )
        throttle = self.policy.throttle
        if throttle is not None and not throttle.allow():
            if self._metrics is not None:
                self._metrics.mesh.throttled.labels(self._target).inc()
            raise _throttled_error(self._target, throttle)
        self.in_flight += 1
        if self._metrics is not None:
            if self._in_flight_gauge is None:
                gauge = self._metrics.rpc.client_in_flight.labels(self._target)
                self._in_flight_gauge = in_flight(gauge)
            self._in_flight_gauge.value += 1
        self.policy.budget.record_call()
        return time.monotonic() + seconds

    def _pick_now(self, key: bytes | None, tried: set[str]) -> Endpoint | None:
        endpoint = self.pool.pick(key, tried)
        if endpoint is None and tried:
            endpoint = self.pool.pick(key)  # every endpoint tried once: any will do
        return endpoint

    async def _pick(self, key: bytes | None, tried: set[str], deadline: float) -> Endpoint:
        """`_pick_now`, or once discovery has endpoints; call it when that found none."""
        # Startup or a full restart: wait for discovery, but never past the deadline.
        await self.pool.wait_for_endpoints(max(0.0, deadline - time.monotonic()))
        endpoint = self.pool.pick(key, tried)
        if endpoint is None:
            raise _error(
                grpc.StatusCode.UNAVAILABLE,
                f"no endpoints registered for service {self._target!r}",
            )
        return endpoint

    def _retry_delay(
        self,
        error: grpc.aio.AioRpcError,
        retryable: bool,
        attempts: int,
        deadline: float,
        keyed: bool = False,
    ) -> float | None:
        trailers: Any = error.trailing_metadata()
        delay = self.policy.retry.delay_before_retry(
            error.code(), trailers, idempotent=retryable, attempts_made=attempts, keyed=keyed
        )
        if delay is None or time.monotonic() + delay >= deadline:
            return None
        throttle = self.policy.throttle
        if (
            error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            and throttle is not None
            and throttle.reject_probability() > 0
        ):
            # The target refuses more calls than the throttle lets through: a retry of a
            # refusal is the very load the throttle is there to keep away.
            return None
        if not self.policy.budget.try_spend():
            if self._metrics is not None:
                self._metrics.mesh.budget_exhausted.labels(self._target).inc()
            return None
        if self._metrics is not None:
            self._metrics.mesh.retries.labels(self._target, error.code().name).inc()
        return delay

    def _finish(self, path: str, started: float, code: grpc.StatusCode, span: Any) -> None:
        self.in_flight -= 1
        if self.policy.throttle is not None:
            self.policy.throttle.record(accepted=code is _OK or code not in _NOT_ACCEPTED)
        if self._metrics is not None:
            assert self._in_flight_gauge is not None  # bound by the call's start
            self._in_flight_gauge.value -= 1
            exemplar = None
            if span is not None and span.get_span_context().trace_flags.sampled:
                exemplar = {"trace_id": format(span.get_span_context().trace_id, "032x")}
            key = path if code is _OK else (path, code)
            duration = self._durations.get(key)
            if duration is None:
                duration = self._metrics.rpc.client_duration.labels(
                    "grpc", path[1:], code.name, self._target
                )
                self._durations[key] = duration
            duration.observe(time.monotonic() - started, exemplar)
        if span is not None and span.is_recording():
            span.set_attribute("rpc.response.status_code", code.name)
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

    def _start_span(self, path: str) -> Any:
        if self._tracer is None:
            return None
        # Most calls are unsampled; when the sampler's answer is known, skip asking it.
        unsampled = tracing.unsampled_span(tracing.parent_of(None), self._roots_sampled)
        if unsampled is not None:
            return unsampled
        return self._tracer.start_span(
            path[1:],
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system.name": "grpc",
                "rpc.method": path[1:],
                "server.address": self._target,
            },
        )

    def _outgoing_metadata(self, metadata: Metadata | None, span: Any) -> Metadata | None:
        if span is None:
            return metadata
        return tracing.inject(metadata, span)

    async def _attempt(
        self,
        endpoint: Endpoint,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
        request: Any,
        deadline: float,
        metadata: Metadata | None,
        call_options: dict[str, Any],
    ) -> Any:
        multicallable = endpoint.calls.get(path) or self._bind(
            endpoint, kind, path, serializer, deserializer
        )
        load = endpoint.load
        load.start()
        started = time.monotonic()
        code = grpc.StatusCode.OK
        timeout = max(0.0, deadline - started)
        try:
            return await multicallable(
                request,
                timeout=timeout,
                metadata=_with_sent_timeout(metadata, timeout),
                **call_options,
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            elapsed = time.monotonic() - started
            load.finish(elapsed, code)
            self.pool.record(endpoint, code, elapsed)

    async def unary(
        self,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        **call_options: Any,
    ) -> Any:
        """Unary-unary (retried when idempotent, or when it carries an idempotency key,
        which the mesh fills in for methods that take one) and stream-unary (never
        retried). Only idempotent calls are hedged."""
        started = time.monotonic()
        deadline = self._begin(path, timeout)
        span = self._start_span(path)
        code = grpc.StatusCode.UNKNOWN
        try:
            metadata = self._outgoing_metadata(metadata, span)
            keyed = False
            if kind == "unary_unary":
                request, keyed = idempotency.with_key(path, request)
            idempotent = kind == "unary_unary" and is_idempotent(path)
            if idempotent and self.policy.hedge_after is not None:
                result = await self._hedged(
                    path, serializer, deserializer, request, deadline, metadata, call_options
                )
            else:
                result = await self._with_retries(
                    kind, path, serializer, deserializer, request, deadline, metadata,
                    call_options, idempotent or keyed, span, keyed,
                )  # fmt: skip
            code = grpc.StatusCode.OK
            return result
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._finish(path, started, code, span)

    async def _with_retries(
        self,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
        request: Any,
        deadline: float,
        metadata: Metadata | None,
        call_options: dict[str, Any],
        retryable: bool,
        span: Any,
        keyed: bool = False,
    ) -> Any:
        key = self._key(metadata)
        tried: set[str] = set()
        attempts = 0
        while True:
            endpoint = self._pick_now(key, tried) or await self._pick(key, tried, deadline)
            attempts += 1
            try:
                return await self._attempt(
                    endpoint, kind, path, serializer, deserializer, request, deadline,
                    metadata, call_options,
                )  # fmt: skip
            except grpc.aio.AioRpcError as error:
                delay = self._retry_delay(error, retryable, attempts, deadline, keyed)
                if delay is None:
                    raise
                tried.add(endpoint.instance_id)
                if span is not None:
                    span.add_event(
                        "retry",
                        {"rpc.response.status_code": error.code().name, "attempt": attempts + 1},
                    )
                await asyncio.sleep(delay)

    async def _hedged(
        self,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
        request: Any,
        deadline: float,
        metadata: Metadata | None,
        call_options: dict[str, Any],
    ) -> Any:
        """Send to a second endpoint if the first is slower than `hedge_after`; first answer
        wins. Only for idempotent calls, and each hedge spends from the retry budget."""
        assert self.policy.hedge_after is not None
        key = self._key(metadata)
        first_endpoint = self._pick_now(key, set()) or await self._pick(key, set(), deadline)

        def attempt(endpoint: Endpoint) -> asyncio.Task[Any]:
            call = self._attempt(
                endpoint, "unary_unary", path, serializer, deserializer, request,
                deadline, metadata, call_options,
            )  # fmt: skip
            return asyncio.ensure_future(call)

        tasks = {attempt(first_endpoint)}
        try:
            done, _ = await asyncio.wait(tasks, timeout=self.policy.hedge_after)
            if not done and self.policy.budget.try_spend():
                second = self.pool.pick(key, {first_endpoint.instance_id})
                if second is not None and second is not first_endpoint:
                    if self._metrics is not None:
                        self._metrics.mesh.hedges.labels(self._target).inc()
                    tasks.add(attempt(second))
            last_error: BaseException | None = None
            while tasks:
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    last_error = task.exception()
            assert last_error is not None
            raise last_error
        finally:
            for task in tasks:
                task.cancel()

    async def server_stream(
        self,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        **call_options: Any,
    ) -> AsyncIterator[Any]:
        """Unary-stream and stream-stream. An idempotent unary-stream call is retried on
        another endpoint only if it fails before its first message arrives."""
        started = time.monotonic()
        deadline = self._begin(path, timeout)
        span = self._start_span(path)
        code = grpc.StatusCode.UNKNOWN
        key = self._key(metadata)
        retryable = kind == "unary_stream" and is_idempotent(path)
        tried: set[str] = set()
        attempts = 0
        try:
            metadata = self._outgoing_metadata(metadata, span)
            while True:
                endpoint = self._pick_now(key, tried) or await self._pick(key, tried, deadline)
                attempts += 1
                multicallable = endpoint.calls.get(path) or self._bind(
                    endpoint, kind, path, serializer, deserializer
                )
                load = endpoint.load
                load.start()
                attempt_started = time.monotonic()
                attempt_code = grpc.StatusCode.OK
                received = False
                try:
                    call = multicallable(
                        request,
                        timeout=max(0.0, deadline - attempt_started),
                        metadata=metadata,
                        **call_options,
                    )
                    async for response in call:
                        received = True
                        yield response
                    code = grpc.StatusCode.OK
                    return
                except grpc.aio.AioRpcError as error:
                    attempt_code = code = error.code()
                    delay = None if received else self._retry_delay(
                        error, retryable, attempts, deadline
                    )  # fmt: skip
                    if delay is None:
                        raise
                    tried.add(endpoint.instance_id)
                    await asyncio.sleep(delay)
                finally:
                    elapsed = time.monotonic() - attempt_started
                    load.finish(elapsed, attempt_code)
                    self.pool.record(endpoint, attempt_code, elapsed)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._finish(path, started, code, span)

    @staticmethod
    def _bind(
        endpoint: Endpoint,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
    ) -> Any:
        assert endpoint.channel is not None
        factory = getattr(endpoint.channel, kind)
        # Not a registered method, unlike generated stubs' calls: in grpcio 1.85 that
        # path costs the client 12,000 instructions more a call (bench.instructions),
        # and buys only grpc's own per-method telemetry labels, which the mesh does not use.
        multicallable = factory(
            path,
            request_serializer=serializer,
            response_deserializer=deserializer,
            _registered_method=False,
        )
        endpoint.calls[path] = multicallable
        return multicallable


class _MultiCallable:
    """What a stub attribute (`stub.Echo`) is: a callable bound to one method path."""

    __slots__ = ("_deserializer", "_kind", "_path", "_router", "_serializer")

    def __init__(
        self,
        router: CallRouter,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
    ) -> None:
        self._router = router
        self._kind = kind
        self._path = path
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **call_options: Any,
    ) -> Any:
        invoke = self._router.unary if self._kind.endswith("_unary") else self._router.server_stream
        return invoke(
            self._kind,
            self._path,
            self._serializer,
            self._deserializer,
            request,
            timeout,
            metadata,
            **call_options,
        )


class MeshChannel:
    """Duck-types the part of `grpc.aio.Channel` that generated stubs use."""

    def __init__(self, router: CallRouter) -> None:
        self.router = router

    def _multicallable(
        self,
        kind: str,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> _MultiCallable:
        return _MultiCallable(self.router, kind, method, request_serializer, response_deserializer)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("unary_unary", method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("unary_stream", method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("stream_unary", method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("stream_stream", method, *args, **kwargs)
