"""Run a mutation once per idempotency key: the flow every keyed RPC shares.

    created = await run_once(records, "orders.PlaceOrder", keyed, plan, work)

`plan` is chosen before the claim (the ids the work will use); `work(plan)` does the
mutation with the plan it is given (the pinned one when resuming) and returns the answer
as bytes, which is recorded and replayed to every repeat. A failed attempt releases its
lease and records nothing, so the next attempt resumes with the same plan at once: a
refusal is answered again by running again, which writes nothing twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from blueprint.errors import Aborted, PreconditionFailed, Violation
from blueprint.infra.idempotency.decisions import Decision, InFlight, Mismatch, Replay

KEY_FIELD = "idempotency_key"


@dataclass(frozen=True, slots=True)
class Keyed:
    """An idempotency key and the digest of the request body it came with."""

    key: str
    request_hash: str


class Records(Protocol):
    async def claim(self, scope: str, key: str, request_hash: str, plan: bytes) -> Decision: ...
    async def finish(self, scope: str, key: str, request_hash: str, response: bytes) -> None: ...
    async def release(self, scope: str, key: str, request_hash: str) -> None: ...


async def run_once(
    records: Records,
    scope: str,
    keyed: Keyed,
    plan: bytes,
    work: Callable[[bytes], Awaitable[bytes]],
) -> bytes:
    """The answer for this request: the first one for its key, or `work`'s now.

    Raises PreconditionFailed when the key came with another body, Aborted (retry after
    the owner's lease) while another attempt holds the key.
    """
    decision = await records.claim(scope, keyed.key, keyed.request_hash, plan)
    if isinstance(decision, Replay):
        return decision.response
    if isinstance(decision, Mismatch):
        raise PreconditionFailed(
            f"{KEY_FIELD} {keyed.key!r} was used with another request; "
            "send a new key for a new request",
            [
                Violation(
                    type="IDEMPOTENCY_KEY_REUSED",
                    subject=f"{scope}:{keyed.key}",
                    description="this key was first used with another request body",
                    field=KEY_FIELD,
                )
            ],
        )
    if isinstance(decision, InFlight):
        raise Aborted(
            f"another attempt with {KEY_FIELD} {keyed.key!r} is in progress; "
            "retry after the delay for its answer",
            retry_after=decision.retry_after,
        )
    try:
        response = await work(decision.plan)  # Fresh: this plan; Resume: the pinned one
    except Exception:
        # Best effort: if this fails too, the lease lapses by itself.
        with contextlib.suppress(Exception):
            await records.release(scope, keyed.key, keyed.request_hash)
        raise
    await records.finish(scope, keyed.key, keyed.request_hash, response)
    return response
