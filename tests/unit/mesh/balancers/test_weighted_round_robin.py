"""Smooth weighted round robin: exact proportions per round, interleaved picks."""

from __future__ import annotations

import random
from collections import Counter

from balancer_helpers import endpoint, endpoints, ids
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers import weighted_round_robin
from blueprint.mesh.endpoint import Endpoint

SETTINGS = settings(max_examples=150, deadline=None)
weight_lists = st.lists(st.integers(1, 20), min_size=1, max_size=8)


@SETTINGS
@given(weights=weight_lists)
def test_every_window_of_total_weight_picks_is_exact(weights: list[int]) -> None:
    balancer = weighted_round_robin()
    balancer.update(endpoints(balancer, weights))
    total = sum(weights)
    picks = ids(balancer.pick() for _ in range(3 * total))
    expected = {f"i{i}": w for i, w in enumerate(weights)}
    for start in range(2 * total + 1):  # every window, not only aligned ones
        assert Counter(picks[start : start + total]) == expected


@SETTINGS
@given(weights=weight_lists)
def test_no_endpoint_gets_a_whole_pick_ahead_of_its_share(weights: list[int]) -> None:
    # The smoothness nginx's algorithm guarantees: after any t picks an
    # endpoint of weight w has fewer than t*w/total + 1 of them. A plain
    # weighted rotation (a a a a a b c for 5, 1, 1) breaks it at t = 4.
    # (The tempting "gap between two picks <= ceil(total / w)" is false for
    # it: weights 1, 1, 2 give c a b c, a gap of 3 > ceil(4 / 2).)
    balancer = weighted_round_robin()
    balancer.update(endpoints(balancer, weights))
    total = sum(weights)
    counts = [0] * len(weights)
    for t in range(1, 2 * total + 1):
        chosen = balancer.pick()
        assert chosen is not None
        counts[int(chosen.instance_id[1:])] += 1
        for i, w in enumerate(weights):
            assert counts[i] * total < t * w + total


def test_heavy_endpoint_is_interleaved_like_nginx() -> None:
    balancer = weighted_round_robin()
    balancer.update(endpoints(balancer, [5, 1, 1]))
    picks = ids(balancer.pick() for _ in range(7))
    assert picks == ["i0", "i0", "i1", "i0", "i2", "i0", "i0"]


@SETTINGS
@given(weights=weight_lists, exclusions=st.lists(st.sets(st.integers(0, 7)), max_size=40))
def test_excluded_endpoints_are_never_returned(
    weights: list[int], exclusions: list[set[int]]
) -> None:
    balancer = weighted_round_robin()
    balancer.update(endpoints(balancer, weights))
    for drawn in exclusions:
        excluded = {f"i{i}" for i in drawn if i < len(weights)}
        chosen = balancer.pick(exclude=excluded)
        if len(excluded) == len(weights):
            assert chosen is None
        else:
            assert chosen is not None
            assert chosen.instance_id not in excluded


@SETTINGS
@given(weights=st.lists(st.integers(1, 20), min_size=2, max_size=8), skipped=st.integers(0, 7))
def test_with_one_excluded_the_rest_keep_their_proportions(
    weights: list[int], skipped: int
) -> None:
    balancer = weighted_round_robin()
    balancer.update(endpoints(balancer, weights))
    skip = f"i{skipped % len(weights)}"
    rest = {f"i{i}": w for i, w in enumerate(weights) if f"i{i}" != skip}
    picks = Counter(ids(balancer.pick(exclude={skip}) for _ in range(sum(rest.values()))))
    assert picks == rest


def test_nothing_to_pick_gives_none() -> None:
    balancer = weighted_round_robin()
    assert balancer.pick() is None
    balancer.update(endpoints(balancer, [3, 1]))
    assert balancer.pick(exclude={"i0", "i1"}) is None


@SETTINGS
@given(weights=weight_lists, warmup=st.integers(0, 50), seed=st.integers(0, 2**32))
def test_resync_in_another_order_changes_nothing(
    weights: list[int], warmup: int, seed: int
) -> None:
    rng = random.Random(seed)
    steady, resynced = weighted_round_robin(), weighted_round_robin()
    same = endpoints(steady, weights)
    steady.update(same)
    resynced.update(same)
    for _ in range(warmup):
        steady.pick()
        resynced.pick()
    for _ in range(sum(weights)):
        shuffled = list(same)
        rng.shuffle(shuffled)
        resynced.update(shuffled)
        assert steady.pick() is resynced.pick()


@SETTINGS
@given(seed=st.integers(0, 2**32), rounds=st.integers(1, 4))
def test_after_churn_proportions_recover(seed: int, rounds: int) -> None:
    # Survivors keep their running weights, so right after a change the
    # rhythm is off by at most about what the old totals allowed; it must not
    # drift further however long the new set lasts.
    rng = random.Random(seed)
    balancer = weighted_round_robin()
    largest_total = 0
    current: list[Endpoint] = []
    for _ in range(rounds):
        chosen = rng.sample(range(10), rng.randint(1, 8))
        current = [endpoint(balancer, n, rng.choice([1, 2, 3, 20])) for n in chosen]
        balancer.update(current)
        total = sum(e.weight for e in current)
        largest_total = max(largest_total, total)
        for _ in range(rng.randrange(3 * total + 1)):
            balancer.pick()
    total = sum(e.weight for e in current)
    slack = (len(current) + 1) * largest_total / total
    for windows in (5, 50):
        counts = Counter(ids(balancer.pick() for _ in range(windows * total)))
        for e in current:
            assert abs(counts[e.instance_id] - windows * e.weight) <= slack
