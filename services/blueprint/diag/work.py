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
    """Slow and busy: spends `seconds` of the event loop thread's CPU time on this
    call, in short slices, yielding between them so the server can still answer
    health checks. The cost is CPU, not wall time: calls running side by side share
    the loop and each takes longer, as calls to a CPU-bound handler do."""
    left = seconds
    while left > 0:
        slice_started = time.thread_time()
        slice_seconds = min(left, 0.005)
        while (spent := time.thread_time() - slice_started) < slice_seconds:
            pass
        left -= spent
        await asyncio.sleep(0)
