"""Least connections: a minimum of outstanding calls, ties shared at random."""

from __future__ import annotations

import random
from collections import Counter

from balancer_helpers import endpoints
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers import least_connections

SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(
    outstanding=st.lists(st.integers(0, 6), min_size=1, max_size=10),
    excluded=st.sets(st.integers(0, 9)),
    seed=st.integers(0, 2**32),
)
def test_returns_an_eligible_endpoint_with_fewest_calls_in_flight(
    outstanding: list[int], excluded: set[int], seed: int
) -> None:
    balancer = least_connections(rng=random.Random(seed))
    members = endpoints(balancer, [1] * len(outstanding))
    for member, count in zip(members, outstanding, strict=True):
        for _ in range(count):
            member.load.start()
    balancer.update(members)
    skip = {f"i{i}" for i in excluded}
    eligible = [count for i, count in enumerate(outstanding) if f"i{i}" not in skip]
    for _ in range(5):
        chosen = balancer.pick(exclude=skip)
        if not eligible:
            assert chosen is None
        else:
            assert chosen is not None
            assert chosen.instance_id not in skip
            assert chosen.load.outstanding == min(eligible)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(2, 8), seed=st.integers(0, 2**32))
def test_ties_are_shared(n: int, seed: int) -> None:
    balancer = least_connections(rng=random.Random(seed))
    balancer.update(endpoints(balancer, [1] * n))
    picks = Counter(e.instance_id for e in (balancer.pick() for _ in range(200 * n)) if e)
    assert len(picks) == n  # not always the first of the idle ones
    for count in picks.values():
        assert 130 <= count <= 270


def test_calls_in_flight_spread_round_the_set() -> None:
    balancer = least_connections(rng=random.Random(3))
    balancer.update(endpoints(balancer, [1, 1, 1]))
    for _ in range(30):
        chosen = balancer.pick()
        assert chosen is not None
        chosen.load.start()
    # Each pick takes a least-loaded one, so the counts never differ by more than one.
    assert [e.load.outstanding for e in balancer._endpoints] == [10, 10, 10]


def test_nothing_to_pick_gives_none() -> None:
    balancer = least_connections()
    assert balancer.pick() is None
    balancer.update(endpoints(balancer, [1]))
    assert balancer.pick(exclude={"i0"}) is None
