"""Power of two choices over peak EWMA, on a fake clock and a seeded rng."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest
from balancer_helpers import FakeClock, endpoints
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers import p2c_peak_ewma
from blueprint.mesh.balancers.p2c import P2CPeakEwma
from blueprint.mesh.endpoint import Endpoint

EXACT = settings(max_examples=100, deadline=None)
# Fixed examples for the statistical checks, so a random draw never flakes CI.
STATISTICAL = settings(max_examples=25, deadline=None, derandomize=True)
seeds = st.integers(0, 2**32)


def balancer_with(
    n: int, seed: int, decay_seconds: float = 1.0
) -> tuple[P2CPeakEwma, list[Endpoint], FakeClock]:
    clock = FakeClock()
    balancer = p2c_peak_ewma(decay_seconds, rng=random.Random(seed), clock=clock)
    members = endpoints(balancer, [1] * n)
    balancer.update(members)
    return balancer, members, clock


def simulate(
    balancer: P2CPeakEwma, clock: FakeClock, rtts: dict[str, float], calls: int, interval: float
) -> Counter[str]:
    """Send a call every `interval` s; each ends its endpoint's rtt later."""
    counts: Counter[str] = Counter()
    in_flight: list[tuple[float, int, Endpoint]] = []
    for seq in range(calls):
        due = clock.now + interval
        while in_flight and in_flight[0][0] <= due:
            ends, _, done = heapq.heappop(in_flight)
            clock.now = ends
            done.load.finish(rtts[done.instance_id])
        clock.now = due
        chosen = balancer.pick()
        assert chosen is not None
        chosen.load.start()
        counts[chosen.instance_id] += 1
        heapq.heappush(in_flight, (due + rtts[chosen.instance_id], seq, chosen))
    return counts


@STATISTICAL
@given(n=st.integers(2, 8), seed=seeds)
def test_equal_endpoints_share_the_load(n: int, seed: int) -> None:
    balancer, _, _ = balancer_with(n, seed)
    counts: Counter[str] = Counter()
    for _ in range(100 * n):  # calls that never end: only outstanding differs
        chosen = balancer.pick()
        assert chosen is not None
        chosen.load.start()
        counts[chosen.instance_id] += 1
    assert len(counts) == n
    for count in counts.values():
        assert 80 <= count <= 120


@STATISTICAL
@given(n=st.integers(2, 6), seed=seeds)
def test_a_ten_times_slower_endpoint_gets_a_small_share(n: int, seed: int) -> None:
    balancer, _, clock = balancer_with(n, seed)
    rtts = {f"i{i}": 0.010 for i in range(n)}
    rtts["i0"] = 0.100
    counts = simulate(balancer, clock, rtts, calls=400 * n, interval=0.002)
    fair = 400
    assert counts["i0"] < 0.25 * fair
    for i in range(1, n):
        assert counts[f"i{i}"] > fair


def test_an_idle_slow_endpoint_is_tried_again_after_its_peak_decays() -> None:
    balancer, (slow, fast), clock = balancer_with(2, seed=1, decay_seconds=10.0)
    slow.load.finish(1.0)
    fast.load.finish(0.010)
    tried_again_after = None
    for second in range(1, 120):
        clock.advance(1.0)
        chosen = balancer.pick()
        if chosen is slow:
            tried_again_after = second
            break
        assert chosen is fast
        fast.load.finish(0.010)
    # 1.0 * exp(-t / 10) falls below the fast one's ~0.009 at t ~ 47 s.
    assert tried_again_after is not None
    assert 40 <= tried_again_after <= 60


@EXACT
@given(
    rtts=st.lists(st.floats(1e-3, 1.0), min_size=2, max_size=2, unique=True),
    outstanding=st.lists(st.integers(0, 5), min_size=2, max_size=2),
    seed=seeds,
)
def test_with_two_eligible_the_cheaper_always_wins(
    rtts: list[float], outstanding: list[int], seed: int
) -> None:
    # Holds only if the two samples are distinct: comparing one endpoint with
    # itself would return the dearer one half the time.
    balancer, members, _ = balancer_with(2, seed)
    for member, rtt, count in zip(members, rtts, outstanding, strict=True):
        member.load.finish(rtt)
        for _ in range(count):
            member.load.start()
    costs = [m.load.cost() for m in members]
    if costs[0] == costs[1]:
        return
    cheaper = members[costs.index(min(costs))]
    assert all(balancer.pick() is cheaper for _ in range(20))


@EXACT
@given(
    n=st.integers(1, 8), seed=seeds, exclusions=st.lists(st.sets(st.integers(0, 7)), max_size=30)
)
def test_never_picks_excluded_and_returns_a_lone_survivor(
    n: int, seed: int, exclusions: list[set[int]]
) -> None:
    balancer, _, _ = balancer_with(n, seed)
    for drawn in exclusions:
        excluded = {f"i{i}" for i in drawn if i < n}
        chosen = balancer.pick(exclude=excluded)
        eligible = {f"i{i}" for i in range(n)} - excluded
        if not eligible:
            assert chosen is None
        else:
            assert chosen is not None
            assert chosen.instance_id in eligible
            if len(eligible) == 1:
                assert chosen.instance_id == next(iter(eligible))


def test_nothing_to_pick_gives_none() -> None:
    balancer, _, _ = balancer_with(0, seed=0)
    assert balancer.pick() is None


@pytest.mark.parametrize(("decay", "initial"), [(0.0, 0.03), (-1.0, 0.03), (10.0, 0.0)])
def test_parameters_are_validated(decay: float, initial: float) -> None:
    with pytest.raises(ValueError):
        p2c_peak_ewma(decay_seconds=decay, initial_rtt_seconds=initial)
