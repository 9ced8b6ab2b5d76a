"""Work takes at least what was asked, on either event loop."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from blueprint.diag import work


async def _shortest_of(runs: int, seconds: float) -> float:
    shortest = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        await work.sleep_for(seconds)
        shortest = min(shortest, time.perf_counter() - started)
    return shortest


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop])
def test_a_sleep_never_ends_early(loop_factory: object) -> None:
    # uvloop's millisecond timers alone ended 20 ms sleeps at 19.9 ms now and then.
    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
        assert runner.run(_shortest_of(30, 0.0105)) >= 0.0105


async def _burn_side_by_side(calls: int, seconds: float) -> float:
    started = time.thread_time()
    await asyncio.gather(*(work.burn_cpu_for(seconds) for _ in range(calls)))
    return time.thread_time() - started


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop])
def test_cpu_work_costs_cpu_time_for_every_call_beside_others(loop_factory: object) -> None:
    # A CPU-bound handler's cost is fixed per call: three calls side by side spend three
    # times the CPU (and so take longer each), not one shared stretch of wall time.
    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
        assert runner.run(_burn_side_by_side(3, 0.02)) >= 3 * 0.02
