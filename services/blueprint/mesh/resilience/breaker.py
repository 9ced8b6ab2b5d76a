"""A per-endpoint circuit breaker: the guide's CLOSED / OPEN / HALF_OPEN, resilience4j's rules.

CLOSED counts the outcomes of the last `window` calls. Once at least
`minimum_calls` are in, a failure rate or slow-call rate at or over its
threshold OPENs the breaker: the endpoint gets no calls for `open_seconds`.
Then HALF_OPEN lets `half_open_probes` calls through; if their failure and
slow rates are under the thresholds the breaker CLOSEs, else it OPENs again.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blueprint.mesh.settings import Settings


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20
    minimum_calls: int = 10
    failure_rate: float = 0.5
    slow_call_rate: float = 0.8
    slow_call_seconds: float = 1.0
    open_seconds: float = 5.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.minimum_calls <= self.window:
            raise ValueError("need 1 <= minimum_calls <= window")
        if not (0 < self.failure_rate <= 1 and 0 < self.slow_call_rate <= 1):
            raise ValueError("rates must be in (0, 1]")
        if self.open_seconds <= 0 or self.slow_call_seconds <= 0 or self.half_open_probes < 1:
            raise ValueError("open_seconds, slow_call_seconds > 0 and half_open_probes >= 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        """The `BLUEPRINT_BREAKER_*` policy, shared by endpoint and store breakers."""
        return cls(
            window=settings.breaker_window,
            minimum_calls=max(1, settings.breaker_window // 2),
            failure_rate=settings.breaker_failure_rate,
            slow_call_rate=settings.breaker_slow_call_rate,
            slow_call_seconds=settings.breaker_slow_call_seconds,
            open_seconds=settings.breaker_open_seconds,
            half_open_probes=settings.breaker_half_open_probes,
        )


Listener = Callable[[BreakerState], None]


class CircuitBreaker:
    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Listener | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_transition = on_transition
        self.state = BreakerState.CLOSED
        self._outcomes: deque[tuple[bool, bool]] = deque(maxlen=config.window)  # (failed, slow)
        # Kept in step with the window, so a call's result is not a sum over it.
        self._failures = 0
        self._slow = 0
        self._opened_at = 0.0
        self._probes_sent = 0
        self._probe_outcomes: list[tuple[bool, bool]] = []

    def _enter(self, state: BreakerState) -> None:
        self.state = state
        self._outcomes.clear()
        self._failures = self._slow = 0
        self._probes_sent = 0
        self._probe_outcomes = []
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        if self._on_transition is not None:
            self._on_transition(state)

    def reopens_at(self) -> float | None:
        """When an OPEN breaker will let probes through; None unless OPEN."""
        if self.state is BreakerState.OPEN:
            return self._opened_at + self._config.open_seconds
        return None

    def allows_call(self) -> bool:
        """May a call go to this endpoint now? Does not reserve a probe (see `on_call`)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() < self._opened_at + self._config.open_seconds:
                return False
            self._enter(BreakerState.HALF_OPEN)
        return self._probes_sent < self._config.half_open_probes

    def on_call(self) -> None:
        """A call was sent: in HALF_OPEN it uses up one of the probes."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes_sent += 1

    def on_result(self, failed: bool, seconds: float) -> None:
        outcome = (failed, seconds >= self._config.slow_call_seconds)
        if self.state is BreakerState.HALF_OPEN:
            self._probe_outcomes.append(outcome)
            if len(self._probe_outcomes) >= self._config.half_open_probes:
                tripped = self._tripped(self._probe_outcomes)
                self._enter(BreakerState.OPEN if tripped else BreakerState.CLOSED)
            return
        if self.state is BreakerState.OPEN:
            return  # a straggler sent before the breaker opened
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen:  # the oldest is about to leave the window
            old_failed, old_slow = outcomes[0]
            self._failures -= old_failed
            self._slow -= old_slow
        outcomes.append(outcome)
        self._failures += outcome[0]
        self._slow += outcome[1]
        total = len(outcomes)
        if total >= self._config.minimum_calls and self._rates_trip(
            self._failures, self._slow, total
        ):
            self._enter(BreakerState.OPEN)

    def _tripped(self, outcomes: list[tuple[bool, bool]]) -> bool:
        failures = sum(1 for failed, _ in outcomes if failed)
        slow = sum(1 for _, was_slow in outcomes if was_slow)
        return self._rates_trip(failures, slow, len(outcomes))

    def _rates_trip(self, failures: int, slow: int, total: int) -> bool:
        return (
            failures / total >= self._config.failure_rate
            or slow / total >= self._config.slow_call_rate
        )
