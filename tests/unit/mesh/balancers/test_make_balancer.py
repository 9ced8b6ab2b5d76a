"""make_balancer covers every BalancerName, and every balancer keeps the contract."""

from __future__ import annotations

import random
import typing

import pytest
from balancer_helpers import FakeClock, endpoints
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint.mesh.balancers import Balancer, make_balancer
from blueprint.mesh.settings import BalancerName

NAMES: tuple[BalancerName, ...] = typing.get_args(BalancerName)


@pytest.mark.parametrize("name", NAMES)
def test_every_name_builds_a_balancer_reporting_that_name(name: BalancerName) -> None:
    balancer = make_balancer(name, rng=random.Random(0), clock=FakeClock())
    assert isinstance(balancer, Balancer)
    assert balancer.name == name
    assert type(balancer).name == name
    assert make_balancer(name).name == name  # the defaults work too


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown balancer 'nope'") as raised:
        make_balancer("nope")  # type: ignore[arg-type]
    for name in NAMES:
        assert name in str(raised.value)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    exclusions=st.lists(st.sets(st.integers(0, 5)), min_size=1, max_size=10),
    key=st.one_of(st.none(), st.binary(max_size=8)),
    seed=st.integers(0, 2**32),
)
def test_the_pick_contract_holds_across_updates(
    name: BalancerName,
    sizes: list[int],
    exclusions: list[set[int]],
    key: bytes | None,
    seed: int,
) -> None:
    clock = FakeClock()
    balancer = make_balancer(name, rng=random.Random(seed), clock=clock)
    for size in sizes:  # endpoints appear and disappear between picks
        members = endpoints(balancer, [1 + i % 3 for i in range(size)])
        balancer.update(members)
        for drawn in exclusions:
            skip = {f"i{i}" for i in drawn}
            chosen = balancer.pick(key, skip)
            eligible = [m for m in members if m.instance_id not in skip]
            if not eligible:
                assert chosen is None
            else:
                assert chosen in eligible
                chosen.load.start()
                clock.advance(0.01)
                chosen.load.finish(0.005)
