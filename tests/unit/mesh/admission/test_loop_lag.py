"""The loop's spare time, as admission sees it: late timers or a thread that wants the
CPU all the time both mean "busy"; an idle loop is not."""

from __future__ import annotations

import asyncio

import pytest

from blueprint.diag import work
from blueprint.mesh.admission.loop_lag import LoopLag, thread_demand_seconds


def test_a_thread_that_wants_the_cpu_nearly_always_is_busy_though_on_time() -> None:
    lag = LoopLag(busy_seconds=0.02, busy_demand=0.9, smoothing=0.5)
    for _ in range(10):
        lag.observe(0.001, 0.97)
    assert lag.busy()
    assert lag.demand == pytest.approx(0.97, abs=0.01)


def test_half_a_cpu_on_time_leaves_spare_time() -> None:
    lag = LoopLag(busy_seconds=0.02, busy_demand=0.9, smoothing=0.5)
    for _ in range(10):
        lag.observe(0.001, 0.5)
    assert not lag.busy()


def test_late_timers_alone_mean_busy() -> None:
    lag = LoopLag(busy_seconds=0.02, smoothing=1.0)
    lag.observe(0.03)
    assert lag.busy()


def test_demand_over_one_counts_as_one() -> None:
    # Run time plus run-queue wait can pass the wall time read a moment earlier.
    lag = LoopLag(smoothing=1.0)
    lag.observe(0.0, 1.2)
    assert lag.demand == 1.0


def test_the_thread_demand_clock_counts_this_threads_cpu() -> None:
    before = thread_demand_seconds()
    total = 0
    for n in range(2_000_000):
        total += n
    assert thread_demand_seconds() > before


async def test_handlers_that_hold_the_cpu_in_slices_make_the_loop_busy() -> None:
    # Slices of 5 ms keep timers nearly on time; the demand shows the loop has no room.
    lag = LoopLag(period=0.02)
    lag.start()
    try:
        for _ in range(100):  # at most 5 s of CPU; busy after a few probes
            await work.burn_cpu_for(0.05)
            if lag.busy():
                break
        assert lag.busy(), (lag.lag, lag.demand)
    finally:
        await lag.stop()


async def test_an_idle_loop_is_not_busy() -> None:
    lag = LoopLag()
    lag.start()
    try:
        await asyncio.sleep(0.6)  # about a dozen probes of a loop with nothing to do
        assert not lag.busy(), (lag.lag, lag.demand)
        assert lag.demand < 0.5
    finally:
        await lag.stop()
