"""Spending time on purpose, the two ways a replica can be slow."""

from __future__ import annotations

import asyncio
import time


async def sleep_for(seconds: float) -> None:
    """Slow, but leaves the process free: other calls keep being served. At least
    `seconds`: uvloop's timers keep whole milliseconds of a cached loop clock and can
    fire early by as much as that clock is stale, so what is left is slept again."""
    deadline = time.perf_counter() + seconds
    while (left := deadline - time.perf_counter()) > 0:  # noqa: ASYNC110 (tops up, no poll)
        await asyncio.sleep(left)


async def burn_cpu_for(seconds: float) -> None:
    """Slow and busy: spins in short slices, yielding between them so the
    server can still answer health checks, as a CPU-bound handler would."""
    deadline = time.perf_counter() + seconds
    while (now := time.perf_counter()) < deadline:
        slice_end = min(deadline, now + 0.005)
        while time.perf_counter() < slice_end:
            pass
        await asyncio.sleep(0)
