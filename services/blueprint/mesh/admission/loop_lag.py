"""Whether the event loop has spare time: the server's own queue that nobody sees.

A server whose loop is saturated (CPU-bound handlers, or simply too many
calls) does not show it in the admission queue: new calls wait inside grpc
and the kernel before any handler code runs, because the loop that would
accept them is busy. Two signs show it, and either is enough:

- lateness: a loop with spare time wakes a sleeper on time; a saturated one
  wakes it a whole loop iteration late.
- demand: the share of wall time the loop's thread wanted the CPU (ran, or
  was runnable and waited for a core). Handlers that hold the CPU in short
  slices keep timers nearly on time, yet leave no spare time: every call
  run beside another then makes both slower, which lateness alone misses.
  On Linux the thread's schedstat gives run and run-queue wait; elsewhere the
  thread's CPU time stands in for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _schedstat_seconds() -> float:
    run_ns, wait_ns, *_ = _SCHEDSTAT.read_text().split()
    return (int(run_ns) + int(wait_ns)) / 1e9


def _pick_demand_clock() -> Callable[[], float]:
    try:
        _schedstat_seconds()
    except (OSError, ValueError):  # not Linux, or schedstat compiled out
        return time.thread_time
    return _schedstat_seconds


# The calling thread's time on the CPU plus its time runnable in the run queue
# (settled once: where schedstat is missing it stays missing).
thread_demand_seconds = _pick_demand_clock()


class LoopLag:
    """Smoothed loop lateness and demand, from a sleeper that wakes every `period`."""

    def __init__(
        self,
        *,
        period: float = 0.05,
        busy_seconds: float = 0.02,
        busy_demand: float = 0.75,
        smoothing: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        demand_clock: Callable[[], float] = thread_demand_seconds,
    ) -> None:
        if period <= 0 or busy_seconds <= 0 or not 0 < smoothing <= 1:
            raise ValueError("need period > 0, busy_seconds > 0, 0 < smoothing <= 1")
        if not 0 < busy_demand <= 1:
            raise ValueError("need 0 < busy_demand <= 1")
        self._period = period
        self._busy = busy_seconds
        self._busy_demand = busy_demand
        self._smoothing = smoothing
        self._clock = clock
        self._demand_clock = demand_clock
        self.lag = 0.0  # seconds, smoothed
        self.demand = 0.0  # share of wall time the loop's thread wanted the CPU, smoothed
        self._task: asyncio.Task[None] | None = None

    def busy(self) -> bool:
        """The loop has no spare time: what is due runs `busy_seconds` late or worse,
        or its thread wanted the CPU `busy_demand` of the time or more."""
        return self.lag >= self._busy or self.demand >= self._busy_demand

    def observe(self, late: float, demand: float | None = None) -> None:
        self.lag += self._smoothing * (max(0.0, late) - self.lag)
        if demand is not None:
            self.demand += self._smoothing * (min(1.0, max(0.0, demand)) - self.demand)

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
        # Runs on the loop's thread, so the demand clock reads that thread.
        since, demanded = self._clock(), self._demand_clock()
        while True:
            due = self._clock() + self._period
            await asyncio.sleep(self._period)
            now, demand_now = self._clock(), self._demand_clock()
            share = (demand_now - demanded) / (now - since) if now > since else None
            self.observe(now - due, share)
            since, demanded = now, demand_now
