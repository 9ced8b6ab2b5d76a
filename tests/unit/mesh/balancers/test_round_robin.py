"""Round robin: strict rotation, exclusions skipped, updates keep it in bounds."""

from __future__ import annotations

import random
from collections import Counter

from balancer_helpers import endpoints, ids
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers import round_robin

SETTINGS = settings(max_examples=100, deadline=None)


@SETTINGS
@given(n=st.integers(1, 12), k=st.integers(1, 5), warmup=st.integers(0, 30))
def test_any_k_rounds_give_each_endpoint_exactly_k(n: int, k: int, warmup: int) -> None:
    balancer = round_robin()
    balancer.update(endpoints(balancer, [1] * n))
    for _ in range(warmup):  # the window may start anywhere in the rotation
        balancer.pick()
    counts = Counter(ids(balancer.pick() for _ in range(k * n)))
    assert counts == {f"i{i}": k for i in range(n)}


@SETTINGS
@given(n=st.integers(1, 10), exclusions=st.lists(st.sets(st.integers(0, 9)), max_size=30))
def test_excluded_endpoints_are_never_returned(n: int, exclusions: list[set[int]]) -> None:
    balancer = round_robin()
    balancer.update(endpoints(balancer, [1] * n))
    for drawn in exclusions:
        excluded = {f"i{i}" for i in drawn if i < n}
        chosen = balancer.pick(exclude=excluded)
        if len(excluded) == n:
            assert chosen is None
        else:
            assert chosen is not None
            assert chosen.instance_id not in excluded


@SETTINGS
@given(n=st.integers(2, 10), excluded=st.integers(0, 9))
def test_exclusion_skips_without_starving_the_rest(n: int, excluded: int) -> None:
    balancer = round_robin()
    balancer.update(endpoints(balancer, [1] * n))
    skip = {f"i{excluded % n}"}
    counts = Counter(ids(balancer.pick(exclude=skip) for _ in range(2 * (n - 1))))
    assert counts == {f"i{i}": 2 for i in range(n) if f"i{i}" not in skip}


def test_nothing_to_pick_gives_none() -> None:
    balancer = round_robin()
    assert balancer.pick() is None
    balancer.update(endpoints(balancer, [1, 1]))
    assert balancer.pick(exclude={"i0", "i1"}) is None
    balancer.update([])
    assert balancer.pick() is None


@SETTINGS
@given(sizes=st.lists(st.integers(0, 8), min_size=1, max_size=8), seed=st.integers(0, 2**32))
def test_updates_keep_the_rotation_in_bounds(sizes: list[int], seed: int) -> None:
    rng = random.Random(seed)
    balancer = round_robin()
    for size in sizes:
        current = endpoints(balancer, [1] * size)
        rng.shuffle(current)
        balancer.update(current)
        for _ in range(rng.randrange(3 * size + 1)):
            chosen = balancer.pick()
            assert chosen in current


@SETTINGS
@given(n=st.integers(1, 10), warmup=st.integers(0, 20), seed=st.integers(0, 2**32))
def test_resync_in_another_order_does_not_disturb_the_rotation(
    n: int, warmup: int, seed: int
) -> None:
    rng = random.Random(seed)
    # Same seed, same starting point: only the resync order differs.
    steady, resynced = round_robin(random.Random(1)), round_robin(random.Random(1))
    same = endpoints(steady, [1] * n)
    steady.update(same)
    resynced.update(same)
    for _ in range(warmup):
        steady.pick()
        resynced.pick()
    for _ in range(2 * n):
        shuffled = list(same)
        rng.shuffle(shuffled)
        resynced.update(shuffled)
        assert steady.pick() is resynced.pick()


def test_fresh_clients_start_the_rotation_at_different_endpoints() -> None:
    # A CLI making one call per process must not always land on the first endpoint.
    firsts = set()
    for seed in range(40):
        balancer = round_robin(random.Random(seed))
        balancer.update(endpoints(balancer, [1, 1, 1]))
        first = balancer.pick()
        assert first is not None
        firsts.add(first.instance_id)
    assert len(firsts) == 3
