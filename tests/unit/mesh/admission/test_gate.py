"""The admission gate on a fake clock: calls run under the limit, wait briefly over it
(oldest first in a burst, newest first under a standing queue), and are shed or expired
without running; slots always come back, whatever ends a call."""

from __future__ import annotations

import asyncio
import random

import pytest

from blueprint.mesh.admission.gate import AdmissionGate, Ticket, Verdict
from blueprint.mesh.admission.limit import GradientLimit
from support.clock import FakeClock

M = "/test.v1.Svc/Do"


def _gate(clock: FakeClock, limit: int = 2, **options: float) -> AdmissionGate:
    fixed = GradientLimit(initial_limit=limit, min_limit=limit, max_limit=limit, clock=clock)
    settings: dict[str, float] = {"interval_seconds": 100.0, "target_seconds": 1.0}
    settings.update(options)
    return AdmissionGate(fixed, clock=clock, rng=random.Random(3), **settings)  # type: ignore[arg-type]


async def _queued(gate: AdmissionGate, count: int) -> None:
    """Until `count` calls wait (each waiter enqueues on its first step)."""
    for _ in range(1000):
        if gate.waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{gate.waiting} calls waiting, expected {count}")


async def test_calls_under_the_limit_run_at_once() -> None:
    gate = _gate(FakeClock(0))
    first, second = await gate.enter(M, 5.0), await gate.enter(M, None)
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    assert gate.in_flight == 2
    gate.leave(first)
    assert gate.in_flight == 1


async def test_the_no_wait_path_admits_only_what_enter_would_admit_at_once() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1, interval_seconds=0.1, target_seconds=0.01)
    assert gate.admit_now(M, 0.0) is None  # expired: enter answers it
    assert gate.admit_now(M, 1.0, waited=0.5) is None  # stood unseen: enter judges it
    assert gate.in_flight == 0
    ticket = gate.admit_now(M, 1.0, waited=0.01)
    assert isinstance(ticket, Ticket) and gate.in_flight == 1
    assert gate.admit_now(M, 1.0) is None  # the limit is reached: enter queues or sheds
    clock.advance(0.02)
    gate.leave(ticket)
    # The method's no-load time is now known (20 ms): a call with less left cannot finish.
    assert gate.admit_now(M, 0.015) is None
    assert await gate.enter(M, 0.015) is Verdict.EXPIRED
    assert isinstance(gate.admit_now(M, 0.5), Ticket)
    assert gate.shed_count == 0


async def test_a_call_whose_deadline_passed_never_starts() -> None:
    gate = _gate(FakeClock(0))
    assert await gate.enter(M, 0.0) is Verdict.EXPIRED
    assert await gate.enter(M, -1.0) is Verdict.EXPIRED
    assert gate.in_flight == 0 and gate.expired_count == 2


async def test_calls_that_keep_arriving_late_for_an_interval_are_shed() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=4, interval_seconds=0.1, target_seconds=0.01)
    # Room to run, but each stood 0.5 s in grpc's queue. The first is let in: one stall
    # leaves such a backlog too, and it drains within the interval.
    first = await gate.enter(M, 0.5, waited=0.5)
    assert isinstance(first, Ticket)
    gate.leave(first)
    clock.advance(0.1)
    # Still late a whole interval on: the queue stands.
    assert await gate.enter(M, 0.5, waited=0.5) is Verdict.SHED
    assert gate.shed_count == 1 and gate.in_flight == 0
    unknown = await gate.enter(M, 0.5, waited=None)  # a caller that did not say
    assert isinstance(unknown, Ticket)
    # A call that came through fast: the queue drained; late ones get an interval again.
    fresh = await gate.enter(M, 0.95, waited=0.05)
    late = await gate.enter(M, 0.5, waited=0.5)
    assert isinstance(fresh, Ticket) and isinstance(late, Ticket)


async def test_the_time_a_call_stood_unseen_counts_against_its_wait_for_a_slot() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1, interval_seconds=0.1, target_seconds=0.01)
    running = await gate.enter(M, None)
    assert isinstance(running, Ticket)
    # Stood 150 ms in grpc's queue: more than a burst may wait in all, and the slot is
    # taken, so it is shed at once rather than kept waiting longer still.
    stale = asyncio.create_task(gate.enter(M, 0.8, waited=0.15))
    for _ in range(3):
        await asyncio.sleep(0)
    assert stale.done() and stale.result() is Verdict.SHED
    assert gate.waiting == 0
    # Stood 50 ms: it may wait the rest of the interval.
    fresh = asyncio.create_task(gate.enter(M, 0.9, waited=0.05))
    await _queued(gate, 1)
    gate.leave(running)
    assert isinstance(await fresh, Ticket)


async def test_a_stale_call_still_takes_a_free_slot() -> None:
    # Nothing to wait for: shedding it would only cost its caller a retry.
    gate = _gate(FakeClock(0), limit=1, interval_seconds=0.1, target_seconds=0.01)
    assert isinstance(await gate.enter(M, 0.8, waited=0.15), Ticket)


async def test_in_a_burst_waiting_calls_get_freed_slots_oldest_first() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1)
    running = await gate.enter(M, None)
    assert isinstance(running, Ticket)
    older = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 1)
    clock.advance(0.001)
    newer = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 2)
    gate.leave(running)
    admitted = await older
    assert isinstance(admitted, Ticket) and not newer.done()
    gate.leave(admitted)
    assert isinstance(await newer, Ticket)


async def test_under_a_standing_queue_the_newest_runs_and_the_stale_are_shed() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1, interval_seconds=0.1, target_seconds=0.01)
    running = await gate.enter(M, None)
    assert isinstance(running, Ticket)
    stale = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 1)
    clock.advance(0.5)  # the queue has not been empty for a whole interval: overload
    fresh = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 2)
    assert gate.overloaded()
    gate.leave(running)
    assert isinstance(await fresh, Ticket)
    assert gate.waiting == 1
    gate.leave(await fresh)  # type: ignore[arg-type]
    assert await stale is Verdict.SHED  # waited past `target` under overload
    assert gate.shed_count == 1 and gate.in_flight == 0


async def test_a_full_queue_sheds_its_oldest_waiter() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1, queue_size=2)
    running = await gate.enter(M, None)
    first = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 1)
    second = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 2)
    third = asyncio.create_task(gate.enter(M, None))
    assert await first is Verdict.SHED
    await _queued(gate, 2)
    assert not second.done() and not third.done()
    gate.leave(running)  # type: ignore[arg-type]
    gate.leave(await second)  # type: ignore[arg-type]
    gate.leave(await third)  # type: ignore[arg-type]
    assert gate.in_flight == 0


async def test_with_no_queue_a_call_over_the_limit_is_shed_at_once() -> None:
    gate = _gate(FakeClock(0), limit=1, queue_size=0)
    await gate.enter(M, None)
    assert await gate.enter(M, None) is Verdict.SHED


async def test_a_waiter_whose_deadline_passes_before_a_slot_frees_does_not_start() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1)
    running = await gate.enter(M, None)
    waiting = asyncio.create_task(gate.enter(M, 0.5))
    await _queued(gate, 1)
    clock.advance(1.0)
    gate.leave(running)  # type: ignore[arg-type]
    assert await waiting is Verdict.EXPIRED
    assert gate.in_flight == 0


async def test_a_waiter_nobody_frees_a_slot_for_gives_up() -> None:
    # Real timers here: the outcome, not the moment, is what is checked.
    gate = _gate(FakeClock(0), limit=1, interval_seconds=0.02, target_seconds=0.01)
    await gate.enter(M, None)
    assert await gate.enter(M, None) is Verdict.SHED
    assert await gate.enter(M, 0.001) is Verdict.EXPIRED
    assert gate.waiting == 0


async def test_a_caller_that_leaves_while_waiting_takes_no_slot() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1)
    running = await gate.enter(M, None)
    waiting = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.waiting == 0
    gate.leave(running)  # type: ignore[arg-type]
    assert gate.in_flight == 0
    assert isinstance(await gate.enter(M, None), Ticket)


async def test_a_caller_cancelled_just_as_it_was_admitted_gives_the_slot_back() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1)
    running = await gate.enter(M, None)
    waiting = asyncio.create_task(gate.enter(M, None))
    await _queued(gate, 1)
    gate.leave(running)  # type: ignore[arg-type]  # the waiter is admitted...
    waiting.cancel()  # ...and cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.in_flight == 0


async def test_ended_calls_feed_the_limit() -> None:
    clock = FakeClock(0)
    gate = _gate(clock)
    ticket = await gate.enter(M, None)
    clock.advance(0.05)
    gate.leave(ticket)  # type: ignore[arg-type]
    assert gate.limit.baseline(M) == pytest.approx(0.05)


async def test_shed_callers_are_told_to_come_back_later_within_bounds() -> None:
    clock = FakeClock(0)
    gate = _gate(clock, limit=1, retry_after_min_seconds=0.05, retry_after_max_seconds=2.0)
    assert all(0.025 <= gate.retry_after() <= 3.0 for _ in range(100))


@pytest.mark.parametrize(
    "options",
    [
        {"queue_size": -1},
        {"target_seconds": 0},
        {"target_seconds": 1.0, "interval_seconds": 0.5},
        {"retry_after_min_seconds": 0},
        {"retry_after_min_seconds": 3, "retry_after_max_seconds": 2},
    ],
)
def test_parameters_out_of_range_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _gate(FakeClock(0), **options)
