"""How long a store call may take, and a timeout that a driver's cleanup cannot stretch.

A store call gets what is left of the gRPC call it serves, less an allowance for the
reply (a tenth, at least 100 ms), and never more than a ceiling (the driver's own
command timeout): a database that stops answering then fails the call with UNAVAILABLE
while its caller still listens, instead of holding it until the caller's deadline.

`asyncio.timeout` is not enough for that: cancelling an asyncpg query makes SQLAlchemy
close the connection gracefully, and asyncpg first sends a cancel request and waits up
to two seconds for it, shielded from the first cancellation, on a server that answers
nothing. SQLAlchemy closes at once when cancelled again, so `hard_deadline` cancels
again every `GRACE_SECONDS` until the block has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from blueprint.mesh.resilience import deadlines

# Left of the caller's deadline for the store's cleanup and the reply to travel back:
# a tenth of what is left, and at least this.
REPLY_ALLOWANCE_SECONDS = 0.1
REPLY_ALLOWANCE_SHARE = 0.1
# How long a cancelled block may take to unwind before it is cancelled again.
GRACE_SECONDS = 0.05


class StoreTimeout(TimeoutError):
    """The store did not answer within the call's budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:.2f} s")
        self.seconds = seconds


def store_deadline(ceiling_seconds: float) -> float:
    """The time.monotonic() by which a store call must end: within the incoming call's
    deadline (less the reply allowance), and at most `ceiling_seconds` away."""
    now = time.monotonic()
    left = deadlines.remaining_incoming()
    if left is None:
        return now + ceiling_seconds
    allowance = max(REPLY_ALLOWANCE_SECONDS, left * REPLY_ALLOWANCE_SHARE)
    return now + max(0.0, min(ceiling_seconds, left - allowance))


@contextlib.asynccontextmanager
async def hard_deadline(until: float, *, insist: bool = True) -> AsyncIterator[None]:
    """Run the block until time.monotonic() `until`, then cancel it, and (`insist`) cancel
    it again every GRACE_SECONDS while it still runs; `StoreTimeout` when it was cut short.

    Insisting is for drivers whose cleanup shields itself from a first cancellation
    (asyncpg). aiosqlite's cleanup must not be cut: its close is queued on the
    connection's own thread, and abandoning it leaves that thread behind.
    A cancellation from outside (the gRPC call was cancelled) stays a CancelledError.
    """
    budget = until - time.monotonic()
    if budget <= 0:
        raise StoreTimeout(0.0)
    task = asyncio.current_task()
    assert task is not None, "hard_deadline needs a task"
    loop = asyncio.get_running_loop()
    fired = 0
    handle: asyncio.TimerHandle

    def fire() -> None:
        nonlocal fired, handle
        fired += 1
        task.cancel()
        if insist:
            handle = loop.call_later(GRACE_SECONDS, fire)

    handle = loop.call_later(budget, fire)  # `fire` replaces it with the next
    try:
        yield
    except asyncio.CancelledError:
        handle.cancel()
        if fired and _uncancel(task, fired) == 0:
            raise StoreTimeout(budget) from None
        raise
    except BaseException:
        handle.cancel()
        await _settle(task, fired)
        raise
    else:
        handle.cancel()
        await _settle(task, fired)


async def _settle(task: asyncio.Task[object], fired: int) -> None:
    """Take back our cancellations of a block that ended otherwise; one requested but not
    delivered yet (Python 3.11's uncancel leaves it pending) is swallowed here, so the
    caller's next await does not get it."""
    if fired and _uncancel(task, fired) == 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)


def _uncancel(task: asyncio.Task[object], times: int) -> int:
    remaining = task.cancelling()
    for _ in range(times):
        remaining = task.uncancel()
    return remaining
