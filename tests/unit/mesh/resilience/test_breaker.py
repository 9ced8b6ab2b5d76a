from __future__ import annotations

import pytest
from fake_clock import FakeClock

from blueprint.mesh.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker

CONFIG = BreakerConfig(
    window=10,
    minimum_calls=5,
    failure_rate=0.5,
    slow_call_rate=0.8,
    slow_call_seconds=1.0,
    open_seconds=5.0,
    half_open_probes=2,
)


def breaker() -> tuple[CircuitBreaker, FakeClock, list[BreakerState]]:
    clock = FakeClock()
    seen: list[BreakerState] = []
    return CircuitBreaker(CONFIG, clock=clock, on_transition=seen.append), clock, seen


def test_stays_closed_below_the_minimum_number_of_calls() -> None:
    cb, _, _ = breaker()
    for _ in range(4):
        cb.on_result(failed=True, seconds=0.01)
    assert cb.state is BreakerState.CLOSED


def test_opens_at_the_failure_rate_and_refuses_calls_while_open() -> None:
    cb, clock, seen = breaker()
    for failed in (False, True, False, True, True):
        cb.on_result(failed=failed, seconds=0.01)
    assert cb.state is BreakerState.OPEN and seen == [BreakerState.OPEN]
    assert not cb.allows_call()
    clock.advance(4.9)
    assert not cb.allows_call()


def test_opens_on_slow_calls_too() -> None:
    cb, _, _ = breaker()
    for _ in range(5):
        cb.on_result(failed=False, seconds=2.0)
    assert cb.state is BreakerState.OPEN


def test_half_open_lets_limited_probes_through_and_closes_when_they_succeed() -> None:
    cb, clock, seen = breaker()
    for _ in range(5):
        cb.on_result(failed=True, seconds=0.01)
    clock.advance(5.0)
    assert cb.allows_call()
    assert cb.state is BreakerState.HALF_OPEN
    cb.on_call()
    cb.on_call()
    assert not cb.allows_call()  # both probes in flight
    cb.on_result(failed=False, seconds=0.01)
    cb.on_result(failed=False, seconds=0.01)
    assert cb.state is BreakerState.CLOSED
    assert seen == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_probes_open_it_again_for_another_period() -> None:
    cb, clock, seen = breaker()
    for _ in range(5):
        cb.on_result(failed=True, seconds=0.01)
    clock.advance(5.0)
    assert cb.allows_call()
    cb.on_call()
    cb.on_call()
    cb.on_result(failed=True, seconds=0.01)
    cb.on_result(failed=False, seconds=0.01)
    assert cb.state is BreakerState.OPEN
    assert cb.reopens_at() == clock.now + 5.0
    assert seen[-1] is BreakerState.OPEN


def test_the_window_slides() -> None:
    cb, _, _ = breaker()
    outcomes = [True, True] + [False] * 8 + [True] * 3
    for failed in outcomes:
        cb.on_result(failed=failed, seconds=0.01)
    # Five failures so far, but the first two slid out: 3 of the last 10.
    assert cb.state is BreakerState.CLOSED
    cb.on_result(failed=True, seconds=0.01)
    assert cb.state is BreakerState.CLOSED  # 4 of the last 10
    cb.on_result(failed=True, seconds=0.01)
    assert cb.state is BreakerState.OPEN  # 5 of the last 10


@pytest.mark.parametrize(
    "kwargs",
    [{"minimum_calls": 0}, {"minimum_calls": 30}, {"failure_rate": 0}, {"open_seconds": 0}],
)
def test_bad_configuration_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


def test_outcomes_that_left_the_window_no_longer_count() -> None:
    config = BreakerConfig(window=4, minimum_calls=4, failure_rate=0.75, slow_call_rate=0.75)
    cb = CircuitBreaker(config, clock=FakeClock())
    # Four failed (and slow) calls in all, never more than two in the last four.
    for failed, seconds in [(True, 2.0), (True, 2.0), (False, 0.01), (False, 0.01)] * 2:
        cb.on_result(failed=failed, seconds=seconds)
        assert cb.state is BreakerState.CLOSED
    cb.on_result(failed=True, seconds=2.0)  # last four: fail, ok, ok, fail
    cb.on_result(failed=True, seconds=2.0)  # last four: ok, ok, fail, fail
    assert cb.state is BreakerState.CLOSED
    cb.on_result(failed=True, seconds=0.01)  # last four: ok, fail, fail, fail
    assert cb.state is BreakerState.OPEN
