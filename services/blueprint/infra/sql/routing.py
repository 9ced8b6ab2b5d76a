"""Where a read goes: the policies behind `Database.read`.

Two small deciders, no SQL: `ReadYourWrites` remembers who wrote lately (they read the
writer, so they see their own write however far replicas lag), and `ReplicaRotation`
takes replicas in turn, skipping one that just failed to connect for a while.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar

Clock = Callable[[], float]

# Who is reading or writing, when a call names nobody: a servicer sets it per request
# (user id, session id) with `caller_scope`; None is an anonymous caller, never pinned.
current_caller: ContextVar[str | None] = ContextVar("blueprint_sql_caller", default=None)


@contextlib.contextmanager
def caller_scope(caller: str | None) -> Iterator[None]:
    """Reads and writes inside count as `caller`'s (for read-your-writes)."""
    token = current_caller.set(caller)
    try:
        yield
    finally:
        current_caller.reset(token)


class ReadYourWrites:
    """A caller that wrote in the last `window_seconds` must read the writer.

    The window should exceed the replicas' usual lag (seconds for asynchronous streaming
    replication under load); callers outside it read replicas. Memory stays bounded by
    the callers of one window: entries are kept in write order, so expired ones are
    dropped from the front.
    """

    def __init__(self, window_seconds: float, clock: Clock = time.monotonic) -> None:
        if isinstance(window_seconds, bool) or not window_seconds >= 0:
            raise ValueError(f"read_your_writes_seconds must be >= 0, got {window_seconds!r}")
        self.window_seconds = float(window_seconds)
        self._clock = clock
        self._last_write: OrderedDict[str, float] = OrderedDict()

    def note_write(self, caller: str | None) -> None:
        if caller is None or self.window_seconds == 0:
            return
        now = self._clock()
        self._last_write[caller] = now
        self._last_write.move_to_end(caller)
        self._forget_before(now - self.window_seconds)

    def pinned_to_writer(self, caller: str | None) -> bool:
        if caller is None:
            return False
        wrote_at = self._last_write.get(caller)
        return wrote_at is not None and self._clock() - wrote_at < self.window_seconds

    def __len__(self) -> int:
        return len(self._last_write)

    def _forget_before(self, cutoff: float) -> None:
        while self._last_write:
            caller, wrote_at = next(iter(self._last_write.items()))
            if wrote_at >= cutoff:
                return
            del self._last_write[caller]


class ReplicaRotation:
    """Round robin over `count` replicas; one that failed is skipped for `retry_seconds`.

    Round robin rather than random: equal replicas get equal shares even over a few
    calls. The order to try is returned whole, so a caller can go on to the next when
    one fails and still end at the writer when none answers.
    """

    def __init__(self, count: int, retry_seconds: float, clock: Clock = time.monotonic) -> None:
        if count < 0:
            raise ValueError(f"replica count must be >= 0, got {count}")
        if not retry_seconds > 0:
            raise ValueError(f"replica retry_seconds must be > 0, got {retry_seconds!r}")
        self._count = count
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._next = 0
        self._down_until = [float("-inf")] * count

    def order(self) -> list[int]:
        """Replica indexes to try for one read, in turn, skipping those down; may be empty."""
        order = self.peek()
        if self._count:
            self._next = (self._next + 1) % self._count
        return order

    def peek(self) -> list[int]:
        """What `order` would return now, without taking a turn."""
        now = self._clock()
        rotated = [(self._next + i) % self._count for i in range(self._count)]
        return [index for index in rotated if self._down_until[index] <= now]

    def mark_down(self, index: int) -> None:
        self._down_until[index] = self._clock() + self._retry_seconds
