"""A clock a test moves by hand: time passes only when the test says so."""

from __future__ import annotations

import time


class FakeClock:
    """Callable like `time.time`; starts at the real time so Redis-side TTLs stay plausible."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a fake clock only moves forward")
        self.now += seconds
