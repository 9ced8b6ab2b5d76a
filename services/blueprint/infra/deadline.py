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


def hard_deadline(until: float, *, insist: bool = True) -> HardDeadline:
    """Run the block until time.monotonic() `until`, then cancel it, and (`insist`) cancel
    it again every GRACE_SECONDS while it still runs; `StoreTimeout` when it was cut short.

    Insisting is for drivers whose cleanup shields itself from a first cancellation
    (asyncpg). aiosqlite's cleanup must not be cut: its close is queued on the
    connection's own thread, and abandoning it leaves that thread behind.
    A cancellation from outside (the gRPC call was cancelled) stays a CancelledError.
    """
    return HardDeadline(until, insist)


class HardDeadline:
    """`hard_deadline`'s context manager: a class, as it wraps every store call."""

    __slots__ = ("_budget", "_fired", "_handle", "_insist", "_loop", "_task", "_until")

    def __init__(self, until: float, insist: bool) -> None:
        self._until = until
        self._insist = insist
        self._budget = 0.0
        self._fired = 0

    async def __aenter__(self) -> None:
        self._budget = self._until - time.monotonic()
        if self._budget <= 0:
            raise StoreTimeout(0.0)
        task = asyncio.current_task()
        assert task is not None, "hard_deadline needs a task"
        self._task = task
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(self._budget, self._fire)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        self._handle.cancel()
        if not self._fired:
            return
        if kind is asyncio.CancelledError:
            if _uncancel(self._task, self._fired) == 0:
                raise StoreTimeout(self._budget) from None
            return  # cancelled from outside as well: that cancellation goes on
        await _settle(self._task, self._fired)

    def _fire(self) -> None:
        self._fired += 1
        self._task.cancel()
        if self._insist:
            self._handle = self._loop.call_later(GRACE_SECONDS, self._fire)


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
