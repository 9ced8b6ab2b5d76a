"""What a request with an idempotency key gets, given what is recorded for its key.

A pure decider, no SQL: `records.py` reads the record and acts on the decision.

    no record, or one older than the retention   -> Fresh: work, with the plan just made
    recorded for another request body            -> Mismatch (FAILED_PRECONDITION)
    done                                         -> Replay the first answer
    pending, its lease still running             -> InFlight (ABORTED, retry after the lease)
    pending, its lease lapsed (its owner died)   -> Resume: work again, with the pinned plan

The plan pins the resource ids an attempt chooses up front (a link's code, a token), so
every attempt of one request writes the same rows; an attempt that finds a row its key
already wrote takes it as its own. That is what makes Resume safe, and two attempts at
once harmless: the lease only spares the work, correctness never depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

PENDING = "pending"
DONE = "done"


@dataclass(frozen=True, slots=True)
class Record:
    request_hash: str
    state: str  # PENDING or DONE
    plan: bytes
    response: bytes | None  # set once DONE
    lease_until: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Fresh:
    plan: bytes


@dataclass(frozen=True, slots=True)
class Resume:
    plan: bytes


@dataclass(frozen=True, slots=True)
class Replay:
    response: bytes


@dataclass(frozen=True, slots=True)
class Mismatch:
    pass


@dataclass(frozen=True, slots=True)
class InFlight:
    retry_after: float  # seconds until the owner's lease lapses


Decision = Fresh | Resume | Replay | Mismatch | InFlight


def decide(record: Record | None, request_hash: str, plan: bytes, now: datetime) -> Decision:
    """The decision for a request (`request_hash`, a `plan` made for it) arriving at `now`."""
    if record is None or record.expires_at <= now:
        return Fresh(plan)
    if record.request_hash != request_hash:
        return Mismatch()
    if record.state == DONE and record.response is not None:
        return Replay(record.response)
    if record.lease_until > now:
        return InFlight((record.lease_until - now).total_seconds())
    return Resume(record.plan)
