"""The discovery panic threshold: a read that loses most endpoints at once is held back."""

from __future__ import annotations

import pytest

from blueprint.mesh.balancers import make_balancer
from blueprint.mesh.discovery import Instance, MemoryRegistry
from blueprint.mesh.pool import EndpointPool
from blueprint.mesh.view_guard import ViewGuard
from support.clock import FakeClock
from support.waiting import eventually


def _instances(*ids: str) -> list[Instance]:
    return [Instance("diag", i, f"127.0.0.1:{n + 1000}") for n, i in enumerate(ids)]


def _ids(view: list[Instance]) -> list[str]:
    return [i.instance_id for i in view]


def test_an_empty_read_after_a_full_view_keeps_the_view_until_the_hold_runs_out() -> None:
    clock = FakeClock()
    guard = ViewGuard(min_share=0.5, hold_seconds=10, clock=clock)
    assert not guard.offer(_instances("a", "b", "c")).held

    verdict = guard.offer([])
    assert verdict.held and _ids(verdict.view) == ["a", "b", "c"]
    assert verdict.recheck_in == pytest.approx(10)

    clock.advance(9.9)
    assert guard.offer([]).held
    clock.advance(0.1)
    verdict = guard.offer([])
    assert not verdict.held and verdict.view == []


def test_a_refilled_registry_within_the_hold_is_believed_and_ends_the_hold() -> None:
    clock = FakeClock()
    guard = ViewGuard(min_share=0.5, hold_seconds=10, clock=clock)
    guard.offer(_instances("a", "b", "c", "d"))
    held = guard.offer(_instances("a"))  # one heartbeat back so far
    assert held.held and _ids(held.view) == ["a", "b", "c", "d"]
    clock.advance(1)
    assert not guard.offer(_instances("a", "b", "c")).held
    # the hold restarts from scratch for the next collapse
    clock.advance(100)
    assert guard.offer([]).held


def test_a_gentle_shrink_is_believed_at_once_and_newcomers_show_during_a_hold() -> None:
    guard = ViewGuard(min_share=0.5, hold_seconds=10, clock=FakeClock())
    guard.offer(_instances("a", "b"))
    assert _ids(guard.offer(_instances("a")).view) == ["a"]  # 1 of 2: a deregistration
    guard.offer(_instances("a", "b", "c", "d"))
    verdict = guard.offer([Instance("diag", "e", "127.0.0.1:2000")])
    assert verdict.held and _ids(verdict.view) == ["a", "b", "c", "d", "e"]


def test_the_first_read_is_believed_even_if_empty() -> None:
    guard = ViewGuard(clock=FakeClock())
    assert guard.offer([]).view == []
    assert not guard.offer(_instances("a")).held


@pytest.mark.parametrize(("share", "hold"), [(-0.1, 1), (1.1, 1), (0.5, -1)])
def test_bad_parameters_are_refused(share: float, hold: float) -> None:
    with pytest.raises(ValueError):
        ViewGuard(min_share=share, hold_seconds=hold)


async def test_the_pool_keeps_its_view_when_the_registry_empties_and_believes_it_later() -> None:
    """The guard in place, on a pool fed by a registry that loses everything; and the
    control: with `min_share` 0 (no protection) the same read empties the pool."""
    registry = MemoryRegistry()
    for instance in _instances("a", "b"):
        await registry.register(instance)
    guarded = EndpointPool(
        "diag", registry, make_balancer("round_robin"),
        view_guard=ViewGuard(hold_seconds=0.5), watch_health=False,
    )  # fmt: skip
    unguarded = EndpointPool(
        "diag", registry, make_balancer("round_robin"),
        view_guard=ViewGuard(min_share=0), watch_health=False,
    )  # fmt: skip
    for pool in (guarded, unguarded):
        pool.start()
    try:
        await eventually(lambda: len(guarded.endpoints) == len(unguarded.endpoints) == 2, 10)
        for instance in _instances("a", "b"):
            await registry.deregister(instance)
        await eventually(lambda: unguarded.endpoints == [], 10, "control: believed at once")
        assert len(guarded.endpoints) == 2 and guarded.pick(None) is not None
        await eventually(lambda: guarded.endpoints == [], 30, "believed after the hold")
    finally:
        await guarded.close()
        await unguarded.close()
