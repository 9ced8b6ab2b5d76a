"""Idempotency keys for mutations: record each key's request and answer, and run the
mutation once per key however often it is retried (the guide's Idempotency-Key).

    records = IdempotencyRecords(database, records_table(Base.metadata))
    answer = await run_once(records, "shortener.Shorten", Keyed(key, digest), plan, work)

A repeat with the same key and body gets the first answer; another body, FAILED_PRECONDITION;
while an attempt holds the key, ABORTED with RetryInfo; an attempt whose owner died
resumes with the owner's pinned plan. See `decisions` for the rules.
"""

from blueprint.infra.idempotency.decisions import (
    Decision,
    Fresh,
    InFlight,
    Mismatch,
    Record,
    Replay,
    Resume,
    decide,
)
from blueprint.infra.idempotency.once import KEY_FIELD, Keyed, Records, run_once
from blueprint.infra.idempotency.records import IdempotencyRecords, records_table

__all__ = [
    "KEY_FIELD",
    "Decision",
    "Fresh",
    "IdempotencyRecords",
    "InFlight",
    "Keyed",
    "Mismatch",
    "Record",
    "Records",
    "Replay",
    "Resume",
    "decide",
    "records_table",
    "run_once",
]
