"""Outlier ejection (Envoy's model): an endpoint failing N times in a row sits out a while.

The time out grows with each repeat (base x times ejected), so a flapping
endpoint stays out longer; and at most `max_share` of a target's endpoints
are ever out at once, so ejection cannot empty a service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class EjectionConfig:
    consecutive_failures: int = 5
    base_seconds: float = 10.0
    max_seconds: float = 300.0
    max_share: float = 0.5

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.base_seconds <= 0 or not 0 <= self.max_share <= 1:
            raise ValueError(
                "need consecutive_failures >= 1, base_seconds > 0, 0 <= max_share <= 1"
            )


class OutlierTracker:
    """The ejection state of one endpoint."""

    def __init__(self, config: EjectionConfig, clock: Callable[[], float] = time.monotonic):
        self._config = config
        self._clock = clock
        self.consecutive_failures = 0
        self.times_ejected = 0
        self.ejected_until = 0.0

    def is_ejected(self) -> bool:
        return self._clock() < self.ejected_until

    def on_result(self, failed: bool, *, may_eject: Callable[[], bool]) -> bool:
        """Record an outcome; returns True when this outcome ejected the endpoint.

        `may_eject` asks the pool whether another ejection keeps within max_share.
        """
        if not failed:
            self.consecutive_failures = 0
            return False
        self.consecutive_failures += 1
        if self.consecutive_failures < self._config.consecutive_failures or self.is_ejected():
            return False
        if not may_eject():
            return False
        self.times_ejected += 1
        seconds = min(self._config.max_seconds, self._config.base_seconds * self.times_ejected)
        self.ejected_until = self._clock() + seconds
        self.consecutive_failures = 0
        return True
