"""A circuit breaker and failure translation around each store a process depends on.

One `StoreGuard` per dependency (a database shard's writer, each of its replicas, a
Redis): every call is admitted by the dependency's breaker (the mesh's `CircuitBreaker`,
with the same `BLUEPRINT_BREAKER_*` policy as endpoints), bounded by the call's deadline
(`deadline.hard_deadline`), and its outcome recorded. An outage (`outages`) comes out as
`StoreUnavailable`; any other error means the store answered and passes through. While
the breaker is open, calls fail at once with `StoreUnavailable` carrying how long until
it lets probes through (RetryInfo at the edge), and the store is not touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from blueprint.errors import StoreUnavailable
from blueprint.infra.deadline import StoreTimeout, hard_deadline, store_deadline
from blueprint.infra.outages import unavailable
from blueprint.mesh.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

# What an open breaker tells a caller to wait when it is half-open with every probe out.
HALF_OPEN_RETRY_SECONDS = 0.1
_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class StoreMetrics:
    """Per dependency: breaker state and changes, outages, calls refused while open."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.breaker_state = Gauge(
            "blueprint_store_breaker_state",
            "Circuit breaker state per store dependency: 0 closed, 1 half-open, 2 open.",
            ["dependency"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "blueprint_store_breaker_transitions",
            "Store circuit breaker state changes, by the state entered.",
            ["dependency", "state"],
            registry=registry,
        )
        self.outages = Counter(
            "blueprint_store_outages",
            "Store calls that failed because the store did not answer (UNAVAILABLE).",
            ["dependency"],
            registry=registry,
        )
        self.rejections = Counter(
            "blueprint_store_breaker_rejections",
            "Store calls failed at once because the dependency's breaker was open.",
            ["dependency"],
            registry=registry,
        )


class StoreGuard:
    """The breaker and failure translation of one dependency."""

    def __init__(
        self,
        dependency: str,
        breaker: BreakerConfig,
        *,
        ceiling_seconds: float,
        failure: type[StoreUnavailable] = StoreUnavailable,
        insist: bool = True,
        metrics: StoreMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ceiling_seconds > 0:
            raise ValueError(f"ceiling_seconds must be > 0, got {ceiling_seconds!r}")
        self.dependency = dependency
        self.ceiling_seconds = ceiling_seconds
        self.insist = insist
        self.clock = clock
        self._failure = failure
        self._metrics = metrics
        self._breaker = CircuitBreaker(breaker, clock=clock, on_transition=self._transitioned)
        if metrics is not None:
            metrics.breaker_state.labels(dependency).set(0)

    @property
    def state(self) -> BreakerState:
        return self._breaker.state

    def deadline(self) -> float:
        """When a call starting now must end (see `deadline.store_deadline`)."""
        return store_deadline(self.ceiling_seconds)

    def allows(self) -> bool:
        """Would a call be admitted now? (Reserves nothing.)"""
        return self._breaker.allows_call()

    def admit(self) -> None:
        """Let one call through, or fail it at once while the breaker is open."""
        if not self._breaker.allows_call():
            if self._metrics is not None:
                self._metrics.rejections.labels(self.dependency).inc()
            reopens_at = self._breaker.reopens_at()
            wait = HALF_OPEN_RETRY_SECONDS if reopens_at is None else reopens_at - self.clock()
            raise self._failure(
                self.dependency,
                "circuit breaker open after repeated failures; not called",
                retry_after=max(0.0, wait),
            )
        self._breaker.on_call()

    def call(self, until: float | None = None) -> GuardedCall:
        """One call: admitted, bounded by `until` (default: `deadline()`), recorded."""
        return GuardedCall(self, self.deadline() if until is None else until, admit=True)

    def attempt(self, until: float, *, settle: bool = True) -> GuardedCall:
        """The work of an admitted call, bounded by `until`: an outage is recorded as a
        failure and raised as `StoreUnavailable`; otherwise the store answered, recorded
        as a success unless `settle` is False (a first step; its sequel records it)."""
        return GuardedCall(self, until, settle=settle)

    def settle(
        self, error: BaseException | None, seconds: float, *, success: bool
    ) -> StoreUnavailable | None:
        """Record how a call ended (a success only if `success`); the `StoreUnavailable`
        to raise for an outage, its cause set; None when `error` stands as it is."""
        if error is None:
            if success:
                self._breaker.on_result(False, seconds)
            return None
        failure = unavailable(self.dependency, error, kind=self._failure)
        if failure is None:  # the store answered (a refusal), or the caller went away
            self._breaker.on_result(False, seconds)
            return None
        self._breaker.on_result(True, seconds)
        if self._metrics is not None:
            self._metrics.outages.labels(self.dependency).inc()
        if failure is not error:
            failure.__cause__ = error
        return failure

    def _transitioned(self, state: BreakerState) -> None:
        log.warning("store breaker of %s is now %s", self.dependency, state.value)
        if self._metrics is not None:
            self._metrics.breaker_state.labels(self.dependency).set(_STATE_VALUES[state])
            self._metrics.breaker_transitions.labels(self.dependency, state.value).inc()


class StoreGuards:
    """Makes the guard of each dependency with one breaker policy and one metrics set."""

    def __init__(
        self,
        breaker: BreakerConfig | None = None,
        *,
        metrics: StoreMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker = breaker or BreakerConfig()
        self.metrics = metrics
        self._clock = clock

    def guard(
        self,
        dependency: str,
        *,
        ceiling_seconds: float,
        failure: type[StoreUnavailable] = StoreUnavailable,
        insist: bool = True,
    ) -> StoreGuard:
        """`insist`: see `deadline.hard_deadline` (off for aiosqlite)."""
        return StoreGuard(
            dependency,
            self.breaker,
            ceiling_seconds=ceiling_seconds,
            failure=failure,
            insist=insist,
            metrics=self.metrics,
            clock=self._clock,
        )


class GuardedCall:
    """`StoreGuard.call`'s context manager: a class, as it wraps every store call."""

    __slots__ = ("_admit", "_deadline", "_guard", "_settle", "_started")

    def __init__(
        self, guard: StoreGuard, until: float, *, admit: bool = False, settle: bool = True
    ) -> None:
        self._guard = guard
        self._deadline = hard_deadline(until, insist=guard.insist)
        self._admit = admit
        self._settle = settle
        self._started = 0.0

    async def __aenter__(self) -> None:
        if self._admit:
            self._guard.admit()
        self._started = self._guard.clock()
        try:
            await self._deadline.__aenter__()
        except StoreTimeout as spent:  # no time left: the store is not called
            failure = self._guard.settle(spent, 0.0, success=self._settle)
            assert failure is not None
            raise failure from spent

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        try:
            await self._deadline.__aexit__(kind, error, trace)
        except StoreTimeout as spent:  # our own cancellation, told as such
            error = spent
        seconds = self._guard.clock() - self._started
        failure = self._guard.settle(error, seconds, success=self._settle)
        if failure is not None and failure is not error:
            raise failure  # its cause: the driver's error, or our StoreTimeout
        # Otherwise what the block raised, if anything, goes on as it is.
