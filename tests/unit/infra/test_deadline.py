"""Store calls end within the call's deadline, even when a driver's cleanup would not."""

from __future__ import annotations

import asyncio
import time

import pytest

from blueprint.infra.deadline import (
    REPLY_ALLOWANCE_SECONDS,
    StoreTimeout,
    hard_deadline,
    store_deadline,
)
from blueprint.mesh.resilience import deadlines


async def test_a_block_that_ends_in_time_is_left_alone() -> None:
    async with hard_deadline(time.monotonic() + 30):
        await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_block_past_its_deadline_is_cut_short() -> None:
    with pytest.raises(StoreTimeout):
        async with hard_deadline(time.monotonic() + 0.01):
            await asyncio.Event().wait()  # a server that never answers
    await asyncio.sleep(0)  # and the task is not left with a cancellation pending


async def test_a_cleanup_that_shields_itself_is_cancelled_again() -> None:
    # What asyncpg does when its query is cancelled: a graceful close, shielded from the
    # first cancellation, waiting on a server that answers nothing. SQLAlchemy gives up
    # on it when cancelled a second time; `asyncio.timeout` would wait it out.
    shielded_waits = 0

    async def query_then_graceful_close() -> None:
        nonlocal shielded_waits
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            shielded_waits += 1
            await asyncio.shield(asyncio.Event().wait())
            raise

    async def bounded() -> None:
        async with hard_deadline(time.monotonic() + 0.01):
            await query_then_graceful_close()

    with pytest.raises(StoreTimeout):
        await asyncio.wait_for(bounded(), timeout=10)  # would hang forever otherwise
    assert shielded_waits == 1


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def caller() -> None:
        async with hard_deadline(time.monotonic() + 30):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(caller())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_time_left_means_the_store_is_not_called() -> None:
    called = False
    with pytest.raises(StoreTimeout):
        async with hard_deadline(time.monotonic() - 1):
            called = True
    assert not called


def test_a_store_call_gets_the_incoming_deadline_less_the_reply_allowance() -> None:
    assert store_deadline(30.0) - time.monotonic() == pytest.approx(30.0, abs=0.5)
    token = deadlines.set_incoming(2.0)
    try:
        left = store_deadline(30.0) - time.monotonic()
        assert 1.5 < left <= 2.0 - max(REPLY_ALLOWANCE_SECONDS, 0.2)
        assert store_deadline(0.5) - time.monotonic() <= 0.5  # the ceiling still holds
    finally:
        deadlines.reset_incoming(token)


async def test_background_work_started_in_a_call_does_not_inherit_its_deadline() -> None:
    token = deadlines.set_incoming(0.5)
    try:
        inherited = await asyncio.create_task(_remaining())
        detached = await asyncio.create_task(_remaining(), context=deadlines.without_incoming())
    finally:
        deadlines.reset_incoming(token)
    assert inherited is not None and detached is None


async def _remaining() -> float | None:
    return deadlines.remaining_incoming()
