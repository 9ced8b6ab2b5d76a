"""The idempotency state machine with a fake clock, and the run-once flow on top of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blueprint.errors import Aborted, PreconditionFailed
from blueprint.infra.idempotency import (
    Decision,
    Fresh,
    InFlight,
    Keyed,
    Mismatch,
    Record,
    Replay,
    Resume,
    decide,
    run_once,
)
from blueprint.infra.idempotency.decisions import DONE, PENDING

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=2)
RETENTION = timedelta(hours=24)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def pending(plan: bytes = b"plan-1", *, at: datetime = T0, body: str = "h1") -> Record:
    return Record(body, PENDING, plan, None, at + LEASE, at + RETENTION)


def done(response: bytes = b"answer-1", *, at: datetime = T0, body: str = "h1") -> Record:
    return Record(body, DONE, b"plan-1", response, at, at + RETENTION)


def test_a_new_key_is_fresh_with_the_plan_just_made() -> None:
    assert decide(None, "h1", b"plan-2", T0) == Fresh(b"plan-2")


def test_the_same_body_after_the_answer_replays_it() -> None:
    assert decide(done(), "h1", b"plan-2", T0 + timedelta(hours=1)) == Replay(b"answer-1")


def test_another_body_with_the_key_is_a_mismatch_whatever_the_state() -> None:
    assert decide(done(), "h2", b"plan-2", T0) == Mismatch()
    assert decide(pending(), "h2", b"plan-2", T0) == Mismatch()


def test_a_live_lease_is_in_flight_until_it_lapses() -> None:
    assert decide(pending(), "h1", b"plan-2", T0 + timedelta(seconds=0.5)) == InFlight(1.5)


def test_a_lapsed_lease_resumes_with_the_pinned_plan_not_the_new_one() -> None:
    assert decide(pending(), "h1", b"plan-2", T0 + LEASE) == Resume(b"plan-1")


def test_after_the_retention_the_key_is_new_again() -> None:
    expired_at = T0 + RETENTION
    assert decide(done(), "h1", b"plan-2", expired_at) == Fresh(b"plan-2")
    assert decide(done(), "h2", b"plan-2", expired_at) == Fresh(b"plan-2")


class MemoryRecords:
    """Records in a dict, deciding with `decide` as the SQL store does."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.rows: dict[tuple[str, str], Record] = {}
        self.released = 0

    async def claim(self, scope: str, key: str, request_hash: str, plan: bytes) -> Decision:
        now = self.clock()
        decision = decide(self.rows.get((scope, key)), request_hash, plan, now)
        if isinstance(decision, Fresh):
            self.rows[scope, key] = pending(plan, at=now, body=request_hash)
        elif isinstance(decision, Resume):
            self.rows[scope, key] = pending(decision.plan, at=now, body=request_hash)
        return decision

    async def finish(self, scope: str, key: str, request_hash: str, response: bytes) -> None:
        self.rows[scope, key] = done(response, at=self.clock(), body=request_hash)

    async def release(self, scope: str, key: str, request_hash: str) -> None:
        self.released += 1
        row = self.rows[scope, key]
        self.rows[scope, key] = Record(
            row.request_hash, row.state, row.plan, None, self.clock(), row.expires_at
        )


async def test_run_once_works_once_and_replays_the_answer() -> None:
    records, runs = MemoryRecords(Clock()), []

    async def work(plan: bytes) -> bytes:
        runs.append(plan)
        return b"link " + plan

    keyed = Keyed("k1", "h1")
    assert await run_once(records, "s.Shorten", keyed, b"p1", work) == b"link p1"
    assert await run_once(records, "s.Shorten", keyed, b"p2", work) == b"link p1"
    assert runs == [b"p1"]


async def test_run_once_refuses_the_key_with_another_body() -> None:
    records = MemoryRecords(Clock())

    async def work(plan: bytes) -> bytes:
        return plan

    await run_once(records, "s.Shorten", Keyed("k1", "h1"), b"p1", work)
    with pytest.raises(PreconditionFailed) as refused:
        await run_once(records, "s.Shorten", Keyed("k1", "h2"), b"p2", work)
    (violation,) = refused.value.violations
    assert violation.field == "idempotency_key" and violation.type == "IDEMPOTENCY_KEY_REUSED"
    # The same key in another scope is another key.
    assert await run_once(records, "s.CreatePaste", Keyed("k1", "h2"), b"p3", work) == b"p3"


async def test_a_failed_attempt_lets_the_next_resume_at_once_with_its_plan() -> None:
    clock = Clock()
    records = MemoryRecords(clock)
    seen = []

    async def failing(plan: bytes) -> bytes:
        seen.append(plan)
        raise ConnectionResetError("database went away mid-write")

    async def working(plan: bytes) -> bytes:
        seen.append(plan)
        return b"ok " + plan

    with pytest.raises(ConnectionResetError):
        await run_once(records, "s.Shorten", Keyed("k1", "h1"), b"p1", failing)
    assert records.released == 1
    assert await run_once(records, "s.Shorten", Keyed("k1", "h1"), b"p2", working) == b"ok p1"
    assert seen == [b"p1", b"p1"]


async def test_an_attempt_whose_owner_holds_the_lease_is_aborted_with_the_wait() -> None:
    clock = Clock()
    records = MemoryRecords(clock)
    await records.claim("s.Shorten", "k1", "h1", b"p1")  # an owner, still working
    clock.now += timedelta(seconds=0.25)

    async def work(plan: bytes) -> bytes:
        raise AssertionError("must not run while another attempt holds the key")

    with pytest.raises(Aborted) as aborted:
        await run_once(records, "s.Shorten", Keyed("k1", "h1"), b"p2", work)
    assert aborted.value.retry_after == pytest.approx(1.75)
