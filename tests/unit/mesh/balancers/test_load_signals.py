"""PendingRequests, Ewma and PeakEwma: counting, averaging, peaks and decay."""

from __future__ import annotations

import math

import pytest
from balancer_helpers import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers.load import Ewma, PeakEwma, PendingRequests

SETTINGS = settings(max_examples=100, deadline=None)
rtts = st.floats(min_value=1e-4, max_value=10.0)
decays = st.floats(min_value=0.05, max_value=60.0)


@SETTINGS
@given(st.lists(st.booleans(), max_size=60))
def test_pending_requests_counts_calls_in_flight(ops: list[bool]) -> None:
    load = PendingRequests()
    expected = 0
    for is_start in ops:
        if is_start:
            load.start()
            expected += 1
        else:
            load.finish(0.01)
            expected = max(0, expected - 1)  # a stray finish never goes negative
        assert load.outstanding == expected
        assert load.cost() == expected


@pytest.mark.parametrize("kind", [Ewma, PeakEwma])
@SETTINGS
@given(st.lists(st.booleans(), max_size=40), rtts)
def test_outstanding_multiplies_cost(
    kind: type[Ewma | PeakEwma], ops: list[bool], rtt: float
) -> None:
    clock = FakeClock()
    load = kind(10.0, rtt, clock)
    expected = 0
    for is_start in ops:
        if is_start:
            load.start()
            expected += 1
        else:
            load.finish(rtt)  # at the same instant: the estimate stays `rtt`
            expected = max(0, expected - 1)
        assert load.outstanding == expected
        assert load.cost() == pytest.approx(rtt * (expected + 1))


@SETTINGS
@given(initial=rtts, rtt=rtts, decay=decays, steps=st.integers(1, 30))
def test_ewma_converges_to_a_constant_rtt(
    initial: float, rtt: float, decay: float, steps: int
) -> None:
    clock = FakeClock()
    load = Ewma(decay, initial, clock)
    for _ in range(steps):
        clock.advance(decay)  # each sample then carries weight 1 - 1/e
        load.finish(rtt)
    # The old value's weight shrinks by e every step.
    error = abs(load.rtt_seconds() - rtt)
    assert error <= abs(initial - rtt) * math.exp(-steps) * (1 + 1e-9) + 1e-12


@SETTINGS
@given(initial=rtts, rtt=rtts, decay=decays, elapsed=st.floats(0.0, 100.0))
def test_ewma_weights_a_sample_by_the_time_since_the_last(
    initial: float, rtt: float, decay: float, elapsed: float
) -> None:
    clock = FakeClock()
    load = Ewma(decay, 1.0, clock)
    load.finish(initial)  # the first answer replaces the default outright
    assert load.rtt_seconds() == initial
    clock.advance(elapsed)
    load.finish(rtt)
    w = math.exp(-elapsed / decay)
    assert load.rtt_seconds() == pytest.approx(initial * w + rtt * (1 - w))
    clock.advance(1000 * decay)
    assert load.rtt_seconds() == pytest.approx(initial * w + rtt * (1 - w))  # no decay on read


@SETTINGS
@given(initial=rtts, history=st.lists(st.tuples(st.floats(0, 30), rtts), max_size=10), peak=rtts)
def test_peak_ewma_jumps_to_a_peak_at_once(
    initial: float, history: list[tuple[float, float]], peak: float
) -> None:
    clock = FakeClock()
    load = PeakEwma(10.0, initial, clock)
    for gap, rtt in history:
        clock.advance(gap)
        load.finish(rtt)
    clock.advance(0.5)
    if peak > load.rtt_seconds():
        load.finish(peak)
        assert load.rtt_seconds() == peak


@SETTINGS
@given(peak=rtts, decay=decays, gaps=st.lists(st.floats(1e-3, 50.0), min_size=1, max_size=10))
def test_peak_ewma_decays_toward_zero_when_idle(
    peak: float, decay: float, gaps: list[float]
) -> None:
    clock = FakeClock()
    load = PeakEwma(decay, peak, clock)
    load.finish(peak)
    previous = load.rtt_seconds()
    elapsed = 0.0
    for gap in gaps:
        clock.advance(gap)
        elapsed += gap
        now = load.rtt_seconds()
        # Strictly cheaper the longer it is left alone, until it underflows to 0.
        assert now < previous or now == previous == 0.0
        assert now == pytest.approx(peak * math.exp(-elapsed / decay))
        previous = now
    assert load.rtt_seconds() == load.rtt_seconds()  # reading changes nothing


@SETTINGS
@given(initial=rtts, decay=decays, gap=st.floats(0.0, 60.0), fraction=st.floats(0.0, 1.0))
def test_peak_ewma_fast_sample_lowers_but_never_below_it(
    initial: float, decay: float, gap: float, fraction: float
) -> None:
    clock = FakeClock()
    load = PeakEwma(decay, initial, clock)
    clock.advance(gap)
    before = load.rtt_seconds()
    sample = before * fraction
    load.finish(sample)
    after = load.rtt_seconds()
    assert sample * (1 - 1e-12) <= after <= before * (1 + 1e-12)


def test_peak_ewma_forgets_a_spike_after_fast_answers() -> None:
    clock = FakeClock()
    load = PeakEwma(10.0, 0.01, clock)
    load.finish(1.0)
    assert load.rtt_seconds() == 1.0
    for _ in range(60):
        clock.advance(1.0)
        load.finish(0.01)
    assert load.rtt_seconds() < 0.02


@pytest.mark.parametrize("kind", [Ewma, PeakEwma])
def test_new_endpoint_starts_at_the_initial_rtt(kind: type[Ewma | PeakEwma]) -> None:
    load = kind(10.0, 0.03, FakeClock())
    assert load.cost() == pytest.approx(0.03)
    assert load.outstanding == 0


@pytest.mark.parametrize("kind", [Ewma, PeakEwma])
def test_bad_samples_do_not_poison_the_estimate(kind: type[Ewma | PeakEwma]) -> None:
    clock = FakeClock()
    load = kind(10.0, 0.03, clock)
    clock.advance(1.0)
    load.finish(float("nan"))
    load.finish(-5.0)
    assert 0.0 <= load.rtt_seconds() <= 0.03


@pytest.mark.parametrize("kind", [Ewma, PeakEwma])
@pytest.mark.parametrize(
    ("decay", "initial"),
    [(0.0, 0.03), (-1.0, 0.03), (math.nan, 0.03), (math.inf, 0.03), (10.0, 0.0), (10.0, math.nan)],
)
def test_parameters_are_validated(
    kind: type[Ewma | PeakEwma], decay: float, initial: float
) -> None:
    with pytest.raises(ValueError):
        kind(decay, initial, FakeClock())


@pytest.mark.parametrize("kind", [Ewma, PeakEwma])
def test_the_first_answer_replaces_the_initial_rtt(kind: type[Ewma | PeakEwma]) -> None:
    # At a high call rate a time-weighted blend would keep the default for about
    # `decay` seconds; a fast new endpoint must look fast after its first answer.
    clock = FakeClock()
    load = kind(10.0, 0.030, clock)
    clock.advance(0.001)
    load.finish(0.002)
    assert load.rtt_seconds() == pytest.approx(0.002)
