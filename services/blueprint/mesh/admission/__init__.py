"""Server-side load shedding: an adaptive concurrency limit (`limit`) and the
queue in front of it (`gate`), put on the call path by `Admission`.

Every unary call of a service passes it before its handler runs (health and
reflection do not: probes must answer most of all when the server is busy).
A call over the limit waits briefly for a slot; one that cannot get one is
answered RESOURCE_EXHAUSTED with `google.rpc.RetryInfo` (when to come back)
and an ErrorInfo saying it was shed unstarted, so the mesh client retries it
on another replica. A call whose deadline has passed is answered
DEADLINE_EXCEEDED without running, with or without shedding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from blueprint.mesh.admission.gate import AdmissionGate, Ticket, Verdict
from blueprint.mesh.admission.limit import GradientLimit
from blueprint.mesh.admission.loop_lag import LoopLag
from blueprint.mesh.errors import overloaded_status
from blueprint.mesh.handlers import Metadata
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import AdmissionMetrics

__all__ = ["Admission", "AdmissionGate", "GradientLimit", "LoopLag", "Ticket", "Verdict"]

Context = grpc.aio.ServicerContext[Any, Any]
# Infrastructure RPCs are never shed (method names as "package.Service/Method").
_EXEMPT_PREFIXES = ("grpc.health.", "grpc.reflection.")
# How a call ended when its caller had gone: it was too slow to be useful.
# The header the mesh client's attempts carry (blueprint.mesh.channel.SENT_TIMEOUT_HEADER;
# not imported: the server side does not depend on the client).
SENT_TIMEOUT_HEADER = "x-blueprint-sent-timeout-ms"
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
_CANCELLED = grpc.StatusCode.CANCELLED


class _Unlimited:
    """The permit of a call nothing counts (shedding off, or an exempt method)."""

    def release(self, latency_seconds: float, code: grpc.StatusCode) -> None:
        pass


_UNLIMITED = _Unlimited()


class _Permit:
    __slots__ = ("_gate", "_ticket")

    def __init__(self, gate: AdmissionGate, ticket: Ticket) -> None:
        self._gate = gate
        self._ticket = ticket

    def release(self, latency_seconds: float, code: grpc.StatusCode) -> None:
        # The gate times the call itself, from admission: waiting is not the call's latency.
        # (Compared by identity: a StatusCode's hash is computed in Python.)
        self._gate.leave(self._ticket, code is _DEADLINE_EXCEEDED or code is _CANCELLED)


def _waited(metadata: Metadata | None, remaining: float | None) -> float | None:
    """How long the call waited before its handler: the timeout its caller sent
    (`SENT_TIMEOUT_HEADER`, the mesh client's) minus the time it has left."""
    if remaining is None or not metadata:
        return None
    for key, value in metadata:
        if key == SENT_TIMEOUT_HEADER:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            return int(text) / 1000 - remaining if text.isdigit() else None
    return None


class Admission:
    """The gate built from settings, with its metrics: `mesh.handlers.Admission`."""

    def __init__(
        self,
        settings: Settings,
        metrics: AdmissionMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.admission_enabled
        self.loop_lag = LoopLag(
            busy_seconds=settings.admission_loop_busy_seconds,
            busy_demand=settings.admission_loop_busy_demand,
        )
        limit = GradientLimit(
            initial_limit=settings.admission_start_limit,
            min_limit=settings.admission_min_limit,
            max_limit=settings.admission_max_limit,
            tolerance=settings.admission_tolerance,
            clock=clock,
        )
        self.gate = AdmissionGate(
            limit,
            queue_size=settings.admission_queue_size,
            interval_seconds=settings.admission_queue_interval_seconds,
            target_seconds=settings.admission_queue_target_seconds,
            retry_after_max_seconds=settings.admission_retry_after_max_seconds,
            shed_rate_target=settings.admission_shed_rate_target,
            clock=clock,
            loop_busy=self.loop_lag.busy,
        )
        self._metrics = metrics
        self._lag_started = False
        if metrics is not None:
            metrics.watch(self.gate, self.loop_lag)

    def governs(self, method: str) -> bool:
        """Whether calls to `method` ("package.Service/Method") pass this gate at all;
        settled once per method, when its handler is wrapped."""
        return not method.startswith(_EXEMPT_PREFIXES)

    def admit_now(
        self, method: str, remaining: float | None, metadata: Metadata | None
    ) -> _Permit | _Unlimited | None:
        """The common case without awaiting: a permit when the call may start at once;
        None when it must wait or be refused, which `admit` then decides."""
        if not self._lag_started:
            self._start_lag()
        if not self.enabled:
            return _UNLIMITED if remaining is None or remaining > 0 else None
        ticket = self.gate.admit_now(method, remaining, _waited(metadata, remaining))
        return None if ticket is None else _Permit(self.gate, ticket)

    async def admit(self, method: str, context: Context) -> _Permit | _Unlimited:
        """A permit to release when the call ends, once it may start; a refused call is
        aborted here (grpc's AbortError propagates)."""
        remaining = context.time_remaining()
        self._start_lag()
        if not self.enabled:
            if remaining is not None and remaining <= 0:
                await self._expired(method, context)
            return _UNLIMITED
        waited = _waited(context.invocation_metadata(), remaining)
        verdict = await self.gate.enter(method, remaining, waited)
        if isinstance(verdict, Ticket):
            return _Permit(self.gate, verdict)
        if verdict is Verdict.EXPIRED:
            await self._expired(method, context)
        if self._metrics is not None:
            self._metrics.shed.labels(method).inc()
        status = overloaded_status(self.gate.retry_after(), self.gate.limit.limit)
        await context.abort_with_status(status)  # type: ignore[attr-defined]
        raise AssertionError("abort returned")  # grpc's abort always raises

    def _start_lag(self) -> None:
        # Here, not at construction: it needs the server's loop.
        if not self._lag_started:
            self.loop_lag.start()
            self._lag_started = True

    async def close(self) -> None:
        await self.loop_lag.stop()

    async def _expired(self, method: str, context: Context) -> None:
        if self._metrics is not None:
            self._metrics.expired.labels(method).inc()
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the call started"
        )
