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
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import AdmissionMetrics

__all__ = ["Admission", "AdmissionGate", "GradientLimit", "LoopLag", "Ticket", "Verdict"]

Context = grpc.aio.ServicerContext[Any, Any]
# Infrastructure RPCs are never shed.
_EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class Admission:
    """The gate built from settings, with its metrics; `enter` aborts refused calls."""

    def __init__(
        self,
        settings: Settings,
        metrics: AdmissionMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.admission_enabled
        self.loop_lag = LoopLag(busy_seconds=settings.admission_loop_busy_seconds)
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
        if metrics is not None:
            metrics.watch(self.gate, self.loop_lag)

    @staticmethod
    def applies_to(method: str) -> bool:
        return not method.startswith(_EXEMPT_PREFIXES)

    async def enter(self, method: str, context: Context) -> Ticket | None:
        """A ticket to give back with `leave`, or None when shedding is off; a refused
        call is aborted here (grpc's AbortError propagates)."""
        remaining = context.time_remaining()
        self.loop_lag.start()  # here, not at construction: it needs the server's loop
        if not self.enabled:
            if remaining is not None and remaining <= 0:
                await self._expired(method, context)
            return None
        verdict = await self.gate.enter(method, remaining)
        if isinstance(verdict, Ticket):
            return verdict
        if verdict is Verdict.EXPIRED:
            await self._expired(method, context)
        if self._metrics is not None:
            self._metrics.shed.labels(method[1:]).inc()
        status = overloaded_status(self.gate.retry_after(), self.gate.limit.limit)
        await context.abort_with_status(status)  # type: ignore[attr-defined]
        raise AssertionError("abort returned")  # grpc's abort always raises

    async def close(self) -> None:
        await self.loop_lag.stop()

    def leave(self, ticket: Ticket | None, *, dropped: bool) -> None:
        if ticket is not None:
            self.gate.leave(ticket, dropped=dropped)

    async def _expired(self, method: str, context: Context) -> None:
        if self._metrics is not None:
            self._metrics.expired.labels(method[1:]).inc()
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the call started"
        )
