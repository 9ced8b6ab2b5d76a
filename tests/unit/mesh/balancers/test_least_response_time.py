"""Least response time: lowest average latency x (calls in flight + 1)."""

from __future__ import annotations

import random

import pytest
from balancer_helpers import FakeClock, endpoints
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers import least_response_time

SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(
    state=st.lists(st.tuples(st.floats(1e-3, 2.0), st.integers(0, 6)), min_size=1, max_size=8),
    excluded=st.sets(st.integers(0, 7)),
    seed=st.integers(0, 2**32),
)
def test_returns_an_eligible_endpoint_of_lowest_latency_times_load(
    state: list[tuple[float, int]], excluded: set[int], seed: int
) -> None:
    clock = FakeClock()
    balancer = least_response_time(rng=random.Random(seed), clock=clock)
    members = endpoints(balancer, [1] * len(state))
    clock.advance(1000.0)  # a sample after a long silence replaces the average
    for member, (rtt, count) in zip(members, state, strict=True):
        member.load.finish(rtt)
        for _ in range(count):
            member.load.start()
    balancer.update(members)
    skip = {f"i{i}" for i in excluded}
    costs = {
        f"i{i}": rtt * (count + 1) for i, (rtt, count) in enumerate(state) if f"i{i}" not in skip
    }
    chosen = balancer.pick(exclude=skip)
    if not costs:
        assert chosen is None
    else:
        assert chosen is not None
        assert chosen.instance_id in costs
        assert costs[chosen.instance_id] == pytest.approx(min(costs.values()))


def test_prefers_the_faster_endpoint() -> None:
    clock = FakeClock()
    balancer = least_response_time(rng=random.Random(0), clock=clock)
    fast, slow = endpoints(balancer, [1, 1])
    balancer.update([fast, slow])
    for _ in range(10):
        clock.advance(1.0)
        fast.load.finish(0.010)
        slow.load.finish(0.050)
    assert all(balancer.pick() is fast for _ in range(10))


def test_a_backed_up_fast_endpoint_loses_to_an_idle_slower_one() -> None:
    clock = FakeClock()
    balancer = least_response_time(rng=random.Random(0), clock=clock)
    fast, slow = endpoints(balancer, [1, 1])
    balancer.update([fast, slow])
    clock.advance(1000.0)
    fast.load.finish(0.010)
    slow.load.finish(0.030)
    fast.load.start()
    assert balancer.pick() is fast  # 0.010 x 2 < 0.030 x 1
    fast.load.start()
    fast.load.start()
    assert balancer.pick() is slow  # 0.010 x 4 > 0.030 x 1


def test_unseen_endpoints_tie_and_share() -> None:
    balancer = least_response_time(rng=random.Random(5), clock=FakeClock())
    balancer.update(endpoints(balancer, [1, 1, 1]))
    picks = {e.instance_id for e in (balancer.pick() for _ in range(60)) if e}
    assert picks == {"i0", "i1", "i2"}


def test_nothing_to_pick_gives_none() -> None:
    balancer = least_response_time()
    assert balancer.pick() is None


@pytest.mark.parametrize(("decay", "initial"), [(0.0, 0.03), (2.0, -1.0)])
def test_parameters_are_validated(decay: float, initial: float) -> None:
    with pytest.raises(ValueError):
        least_response_time(decay_seconds=decay, initial_rtt_seconds=initial)
