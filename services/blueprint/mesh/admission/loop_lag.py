"""How late the event loop runs what is due: the server's own queue that nobody sees.

A server whose loop is saturated (CPU-bound handlers, or simply too many
calls) does not show it in the admission queue: new calls wait inside grpc
and the kernel before any handler code runs, because the loop that would
accept them is busy. The lateness of a timer shows it: a loop with spare time
wakes a sleeper on time; a saturated one wakes it a whole loop iteration late.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class LoopLag:
    """A smoothed measure of loop lateness, from a sleeper that wakes every `period`."""

    def __init__(
        self,
        *,
        period: float = 0.05,
        busy_seconds: float = 0.02,
        smoothing: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if period <= 0 or busy_seconds <= 0 or not 0 < smoothing <= 1:
            raise ValueError("need period > 0, busy_seconds > 0, 0 < smoothing <= 1")
        self._period = period
        self._busy = busy_seconds
        self._smoothing = smoothing
        self._clock = clock
        self.lag = 0.0  # seconds, smoothed
        self._task: asyncio.Task[None] | None = None

    def busy(self) -> bool:
        """The loop has no spare time: what is due runs `busy_seconds` late or worse."""
        return self.lag >= self._busy

    def observe(self, late: float) -> None:
        self.lag += self._smoothing * (max(0.0, late) - self.lag)

    def start(self) -> None:
        """Begin measuring on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due = self._clock() + self._period
            await asyncio.sleep(self._period)
            self.observe(self._clock() - due)
