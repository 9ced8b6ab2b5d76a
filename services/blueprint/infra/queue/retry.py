"""When a failed message is tried again, and when it is given up on."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with bounded jitter, and a dead-letter after N deliveries.

    Jitter is kept below (m - 1) / (m + 1) for multiplier m, so each delay is longer
    than the one before (until the cap) even at the jitter's extremes: retries always
    back off, while a batch that failed together does not come back together.
    """

    base_seconds: float = 1.0
    multiplier: float = 2.0
    max_seconds: float = 300.0  # five minutes: long enough to ride out a dependency restart
    jitter: float = 0.2
    max_deliveries: int = 5  # then the dead-letter stream; a human looks at it

    def __post_init__(self) -> None:
        ceiling = (self.multiplier - 1) / (self.multiplier + 1)
        checks = [
            (self.base_seconds > 0, "base_seconds must be > 0"),
            (self.multiplier > 1, "multiplier must be > 1"),
            (self.max_seconds >= self.base_seconds, "max_seconds must be >= base_seconds"),
            (
                0 <= self.jitter < ceiling,
                f"jitter must be in [0, {ceiling:.3f}) for this multiplier",
            ),
            (1 <= self.max_deliveries <= 1000, "max_deliveries must be in [1, 1000]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"RetryPolicy: {message}")

    def delay(self, delivery: int, rng: random.Random) -> float:
        """Seconds to wait after delivery number `delivery` (1-based) failed."""
        if delivery < 1:
            raise ValueError(f"delivery numbers start at 1, got {delivery}")
        exponent = min(delivery - 1, 64)  # beyond that, the cap has long been reached
        raw = min(self.base_seconds * self.multiplier**exponent, self.max_seconds)
        return raw * (1 + self.jitter * (2 * rng.random() - 1))

    def exhausted(self, delivery: int) -> bool:
        """True when delivery number `delivery` was the last one allowed."""
        return delivery >= self.max_deliveries
