from __future__ import annotations

import asyncio
import time

import pytest
from fake_clock import FakeClock

from blueprint.mesh.resilience import deadlines
from blueprint.mesh.resilience.ejection import EjectionConfig, OutlierTracker

CONFIG = EjectionConfig(consecutive_failures=3, base_seconds=10, max_seconds=25, max_share=0.5)


def test_consecutive_failures_eject_and_the_time_out_grows_with_repeats() -> None:
    clock = FakeClock()
    tracker = OutlierTracker(CONFIG, clock)
    results = [tracker.on_result(True, may_eject=lambda: True) for _ in range(3)]
    assert results == [False, False, True]
    assert tracker.is_ejected() and tracker.ejected_until == clock.now + 10
    clock.advance(10)
    assert not tracker.is_ejected()
    for _ in range(3):
        tracker.on_result(True, may_eject=lambda: True)
    assert tracker.ejected_until == clock.now + 20
    clock.advance(20)
    for _ in range(3):
        tracker.on_result(True, may_eject=lambda: True)
    assert tracker.ejected_until == clock.now + 25  # capped


def test_a_success_resets_the_count_and_the_share_limit_is_respected() -> None:
    tracker = OutlierTracker(CONFIG, FakeClock())
    tracker.on_result(True, may_eject=lambda: True)
    tracker.on_result(True, may_eject=lambda: True)
    tracker.on_result(False, may_eject=lambda: True)
    assert not tracker.on_result(True, may_eject=lambda: True)
    assert tracker.consecutive_failures == 1
    for _ in range(5):
        assert not tracker.on_result(True, may_eject=lambda: False)
    assert not tracker.is_ejected()


def test_outgoing_timeout_without_an_incoming_call_is_the_requested_or_default() -> None:
    assert deadlines.outgoing_timeout(None, 7.0) == 7.0
    assert deadlines.outgoing_timeout(2.0, 7.0) == 2.0


async def test_outgoing_timeout_never_outlives_the_incoming_call() -> None:
    async def handler() -> tuple[float, float]:
        token = deadlines.set_incoming(0.2)
        try:
            await asyncio.sleep(0.05)
            return deadlines.outgoing_timeout(None, 10.0), deadlines.outgoing_timeout(0.01, 10.0)
        finally:
            deadlines.reset_incoming(token)

    inherited, shorter = await handler()
    assert 0 < inherited < 0.2
    assert shorter == 0.01
    assert deadlines.remaining_incoming() is None


def test_an_incoming_call_without_deadline_leaves_the_default() -> None:
    token = deadlines.set_incoming(None)
    try:
        assert deadlines.outgoing_timeout(None, 3.0) == 3.0
    finally:
        deadlines.reset_incoming(token)
    assert time.monotonic() > 0


@pytest.mark.parametrize("kwargs", [{"consecutive_failures": 0}, {"max_share": 2}])
def test_bad_ejection_configuration_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EjectionConfig(**kwargs)  # type: ignore[arg-type]


def test_a_call_without_deadline_gets_its_methods_default() -> None:
    from blueprint.mesh.client import call_policy
    from blueprint.mesh.settings import Settings

    policy = call_policy(
        Settings(
            default_timeout_seconds=4,
            method_timeouts={"blueprint.diag.v1.Diagnostics/Work": 70},
        )
    )
    assert policy.default_timeout_for("/blueprint.diag.v1.Diagnostics/Work") == 70
    assert policy.default_timeout_for("/blueprint.diag.v1.Diagnostics/Echo") == 4
