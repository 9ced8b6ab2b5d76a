"""Uniform random: only eligible endpoints, and every one of them reachable."""

from __future__ import annotations

import random

from balancer_helpers import endpoints
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers import random_choice


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 10), excluded=st.sets(st.integers(0, 9)), seed=st.integers(0, 2**32))
def test_picks_only_eligible_and_reaches_them_all(n: int, excluded: set[int], seed: int) -> None:
    balancer = random_choice(rng=random.Random(seed))
    balancer.update(endpoints(balancer, [1] * n))
    skip = {f"i{i}" for i in excluded}
    eligible = {f"i{i}" for i in range(n)} - skip
    chosen = [balancer.pick(exclude=skip) for _ in range(60 * n)]
    if not eligible:
        assert chosen == [None] * len(chosen)
    else:
        assert {e.instance_id for e in chosen if e is not None} == eligible
        assert None not in chosen


def test_seeded_rng_makes_picks_reproducible() -> None:
    def run(seed: int) -> list[str]:
        balancer = random_choice(rng=random.Random(seed))
        members = endpoints(balancer, [1] * 5)
        balancer.update(list(reversed(members)))  # registry order does not matter
        return [e.instance_id for e in (balancer.pick() for _ in range(20)) if e]

    assert run(9) == run(9)
