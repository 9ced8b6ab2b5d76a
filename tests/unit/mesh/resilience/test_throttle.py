"""Client-side adaptive throttling: the SRE book's formula on a fake clock and seeded RNG."""

from __future__ import annotations

import random

import pytest
from fake_clock import FakeClock

from blueprint.mesh.resilience.throttle import AdaptiveThrottle


def _throttle(clock: FakeClock, k: float = 2.0, seed: int = 3) -> AdaptiveThrottle:
    return AdaptiveThrottle(
        k=k, window_seconds=120, buckets=120, clock=clock, rng=random.Random(seed)
    )


def _call(throttle: AdaptiveThrottle, *, served: bool) -> bool:
    """One call as the router makes it; True when it went out."""
    if not throttle.allow():
        return False
    throttle.record(accepted=served)
    return True


def test_a_target_that_accepts_everything_is_never_throttled() -> None:
    throttle = _throttle(FakeClock())
    for _ in range(10_000):
        assert _call(throttle, served=True)
    assert throttle.reject_probability() == 0.0


def test_the_probability_is_the_books_formula() -> None:
    throttle = _throttle(FakeClock())
    for served in [True] * 20 + [False] * 80:
        throttle.record(accepted=served)
    # (requests - K * accepts) / (requests + 1) = (100 - 40) / 101
    assert throttle.reject_probability() == pytest.approx(60 / 101)
    assert (throttle.requests, throttle.accepts) == (100, 20)


def _drive(
    throttle: AdaptiveThrottle, clock: FakeClock, seconds: int, capacity: float
) -> tuple[int, int]:
    """100 calls a second asked for; the target serves at most `capacity` a second."""
    sent = accepted = 0
    served: dict[int, int] = {}
    for _ in range(seconds * 100):
        clock.advance(0.01)
        if throttle.allow():
            sent += 1
            second = int(clock())
            serves = served.get(second, 0) < capacity
            throttle.record(accepted=serves)
            if serves:
                served[second] = served.get(second, 0) + 1
                accepted += 1
    return sent, accepted


def test_a_target_serving_a_tenth_of_the_demand_receives_about_k_times_what_it_serves() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    sent, accepted = _drive(throttle, clock, 60, capacity=10)
    assert accepted == 600  # the target was kept busy ...
    assert sent < 0.3 * 6000  # ... while most of the demand it would refuse never left
    assert 1.5 * accepted < sent < 2.6 * accepted


def test_k_lower_throttles_harder() -> None:
    gentle, strict = _throttle(FakeClock(), k=2.0), _throttle(FakeClock(), k=1.1)
    for throttle in (gentle, strict):
        for served in [True] * 40 + [False] * 60:
            throttle.record(accepted=served)
    assert strict.reject_probability() > gentle.reject_probability() > 0


def test_refusals_fade_as_the_window_forgets_them() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(1000):  # an outage: nothing accepted
        _call(throttle, served=False)
    assert throttle.reject_probability() > 0.99
    clock.advance(60)
    assert throttle.requests == 1000  # still inside the two minutes
    clock.advance(61)
    assert throttle.requests == 0
    assert throttle.reject_probability() == 0.0
    assert throttle.allow()


def test_slots_leave_the_window_one_at_a_time() -> None:
    clock = FakeClock(now=0.0)
    throttle = AdaptiveThrottle(window_seconds=10, buckets=10, clock=clock)
    for _ in range(10):
        throttle.record(accepted=True)  # 1 call a second, each in its own slot
        clock.advance(1)
    assert throttle.requests == 9  # the first slot left the window just now
    clock.advance(3)
    assert throttle.requests == 6
    assert throttle.accepts == 6
    clock.advance(1000)  # far past the window: everything cleared, nothing negative
    assert (throttle.requests, throttle.accepts) == (0, 0)


def test_a_recovered_target_gets_more_calls_until_the_window_forgets_the_overload() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    _drive(throttle, clock, 60, capacity=10)
    during = throttle.reject_probability()
    sent = [_drive(throttle, clock, 20, capacity=10**9)[0] for _ in range(3)]
    assert sent[0] < sent[1] < sent[2]  # every call served now lowers the refusals
    assert throttle.reject_probability() < during
    clock.advance(120)  # the overload has left the window
    assert _drive(throttle, clock, 1, capacity=10**9) == (100, 100)


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveThrottle(k=0.5)
    with pytest.raises(ValueError):
        AdaptiveThrottle(window_seconds=0)
    with pytest.raises(ValueError):
        AdaptiveThrottle(buckets=0)


def test_calls_in_flight_do_not_count_as_refused() -> None:
    throttle = _throttle(FakeClock())
    # A burst at start-up: many calls sent before any has ended.
    assert all(throttle.allow() for _ in range(100))
    assert throttle.requests == 0
