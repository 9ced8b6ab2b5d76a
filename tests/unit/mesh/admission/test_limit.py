"""The adaptive limit, fed fake latencies on a fake clock: it falls only under real
overload (calls queueing AND slower than no-load), rises when calls queue at normal
latency, and otherwise holds."""

from __future__ import annotations

import random

import pytest

from blueprint.mesh.admission.limit import GradientLimit, MethodBaseline
from support.clock import FakeClock

WORK = "/blueprint.diag.v1.Diagnostics/Work"
ECHO = "/blueprint.diag.v1.Diagnostics/Echo"


def _limit(clock: FakeClock, **overrides: float) -> GradientLimit:
    options: dict[str, float] = {"initial_limit": 20, "min_limit": 8, "max_limit": 1000}
    options.update(overrides)
    return GradientLimit(clock=clock, **options)  # type: ignore[arg-type]


def _feed(
    limit: GradientLimit,
    clock: FakeClock,
    latencies: list[float],
    *,
    queueing: bool,
    method: str = WORK,
    dropped: bool = False,
) -> None:
    for latency in latencies:
        clock.advance(0.03)
        limit.record(method, latency, queueing=queueing, dropped=dropped)


def test_moderate_load_with_noisy_latency_never_lowers_the_limit() -> None:
    # The lesson of a limiter that shed a healthy server: latency jitter on a busy
    # machine, with nobody waiting for a slot, is no reason to shed.
    clock, rng = FakeClock(0), random.Random(7)
    limit = _limit(clock)
    noisy = [0.002 * rng.choice([1, 1, 1, 2, 5, 10]) for _ in range(2000)]
    _feed(limit, clock, noisy, queueing=False)
    assert limit.limit == 20


def test_slow_calls_with_nobody_waiting_hold_the_limit() -> None:
    clock = FakeClock(0)
    limit = _limit(clock)
    _feed(limit, clock, [0.01] * 20, queueing=False)
    _feed(limit, clock, [0.5] * 200, queueing=False)  # a slow dependency, not overload
    assert limit.limit == 20


def test_calls_queueing_at_no_load_latency_raise_the_limit() -> None:
    clock = FakeClock(0)
    limit = _limit(clock)
    _feed(limit, clock, [0.01] * 200, queueing=True)
    assert limit.limit > 20


def test_calls_queueing_and_slower_than_no_load_lower_it_but_never_below_the_floor() -> None:
    clock = FakeClock(0)
    limit = _limit(clock)
    _feed(limit, clock, [0.05] * 10, queueing=False)  # learns no-load: 50 ms
    _feed(limit, clock, [0.2] * 8, queueing=True)
    lowered = limit.limit
    assert 8 <= lowered < 20
    _feed(limit, clock, [0.2] * 400, queueing=True)
    assert limit.limit == 8


def test_one_cut_at_most_halves_the_limit() -> None:
    clock = FakeClock(0)
    limit = _limit(clock, initial_limit=100, min_limit=1)
    _feed(limit, clock, [0.05] * 10, queueing=False)
    _feed(limit, clock, [5.0] * 4, queueing=True)  # 100x slower: one window
    assert limit.limit == 50


def test_calls_whose_callers_gave_up_count_as_too_slow() -> None:
    clock = FakeClock(0)
    limit = _limit(clock, initial_limit=100, min_limit=1)
    _feed(limit, clock, [0.05] * 10, queueing=False)
    _feed(limit, clock, [0.06] * 4, queueing=True, dropped=True)
    assert limit.limit == 50


def test_a_stall_in_one_window_is_outvoted_by_the_median() -> None:
    clock = FakeClock(0)
    limit = _limit(clock)
    _feed(limit, clock, [0.01] * 10, queueing=False)
    _feed(limit, clock, [0.01, 0.01, 0.5, 0.01], queueing=True)  # one GC pause
    assert limit.limit >= 20


def test_each_method_is_judged_against_its_own_no_load_latency() -> None:
    # A 50 ms computation beside a 1 ms read is not a slow read.
    clock = FakeClock(0)
    limit = _limit(clock)
    for _ in range(100):
        _feed(limit, clock, [0.001], queueing=True, method=ECHO)
        _feed(limit, clock, [0.05], queueing=True, method=WORK)
    assert limit.limit > 20
    assert limit.baseline(ECHO) == pytest.approx(0.001)
    assert limit.baseline(WORK) == pytest.approx(0.05)
    assert limit.baseline("/never/called") is None


def test_it_never_rises_above_the_ceiling() -> None:
    clock = FakeClock(0)
    limit = _limit(clock, max_limit=30)
    _feed(limit, clock, [0.01] * 2000, queueing=True)
    assert limit.limit == 30


def test_a_cpu_bound_server_is_held_near_one_call_at_a_time() -> None:
    # A handler that holds the event loop 50 ms: n calls at once each take n x 50 ms,
    # no more answers per second. Under unending demand the limit must settle where
    # latency stays within tolerance of no-load, i.e. one or two calls at once.
    clock = FakeClock(0)
    limit = _limit(clock, initial_limit=20, min_limit=1)
    _feed(limit, clock, [0.05] * 10, queueing=False)  # no-load latency, learnt first
    seen = []
    for _ in range(600):
        running = limit.limit
        clock.advance(0.05)  # one call's worth of CPU time passes per answer
        limit.record(WORK, 0.05 * running, queueing=True)
        seen.append(running)
    settled = seen[-200:]
    assert max(settled) <= 2
    assert settled.count(1) >= len(settled) // 3


def test_the_floor_holds_a_cpu_bound_server_at_min_limit() -> None:
    clock = FakeClock(0)
    limit = _limit(clock, initial_limit=20, min_limit=8)
    _feed(limit, clock, [0.05] * 10, queueing=False)
    for _ in range(600):
        running = limit.limit
        clock.advance(0.05)
        limit.record(WORK, 0.05 * running, queueing=True)
    assert limit.limit == 8


def test_a_standing_queue_does_not_make_loaded_latency_the_new_normal() -> None:
    clock = FakeClock(0)
    limit = _limit(clock, baseline_seconds=10)
    _feed(limit, clock, [0.05] * 10, queueing=False)
    _feed(limit, clock, [0.4] * 2000, queueing=True)  # a minute of overload
    assert limit.baseline(WORK) == pytest.approx(0.05)
    assert limit.limit == 8


def test_baseline_forgets_its_minimum_after_two_periods() -> None:
    baseline = MethodBaseline(period=10, now=0)
    baseline.observe(0.01, now=1)
    baseline.observe(0.05, now=11)  # new period: the old minimum still counts
    assert baseline.value == 0.01
    baseline.observe(0.05, now=21)  # two periods on: only recent calls count
    assert baseline.value == 0.05
    baseline.observe(0.07, now=60)  # a long silence forgets everything
    assert baseline.value == 0.07


@pytest.mark.parametrize(
    "options",
    [
        {"min_limit": 0},
        {"min_limit": 10, "max_limit": 5, "initial_limit": 7},
        {"initial_limit": 2000},
        {"tolerance": 1.0},
        {"window_seconds": 0},
        {"window_samples": 0},
        {"slack_seconds": -1},
    ],
)
def test_parameters_out_of_range_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _limit(FakeClock(0), **options)


def test_slow_calls_on_a_loop_with_no_spare_time_lower_the_limit() -> None:
    # Nobody waits for a slot, yet the loop's thread wants the CPU all the time: calls
    # run side by side on one CPU and slow each other, so fewer at once is the cure.
    clock = FakeClock()
    limit = _limit(clock, min_limit=1)
    _feed(limit, clock, [0.05] * 8, queueing=False)  # no-load latency: 50 ms
    for _ in range(40):
        clock.advance(0.03)
        limit.record(WORK, 0.15, queueing=False, loop_busy=True)
    assert limit.limit <= 2


def test_the_same_slow_calls_with_spare_loop_time_leave_the_limit_alone() -> None:
    # A slow dependency, not this process: shedding would not make it faster.
    clock = FakeClock()
    limit = _limit(clock, min_limit=1)
    _feed(limit, clock, [0.05] * 8, queueing=False)
    for _ in range(40):
        clock.advance(0.03)
        limit.record(WORK, 0.15, queueing=False, loop_busy=False)
    assert limit.limit == 20
