"""Snowflake ids: 64-bit, time-ordered, made by each worker alone.

    0 | 41 bits: ms since EPOCH_MS | 10 bits: worker id | 12 bits: sequence

The top bit stays 0 so an id fits a signed BIGINT. 41 bits of milliseconds last 69
years from the epoch (2024-01-01, so until 2093); 1024 workers may run at once (each
holds its id through a lease, see `lease.py`); each makes up to 4096 ids per
millisecond, and waits for the next millisecond beyond that. Ids from one generator
strictly increase; ids from different workers are unique and ordered by time to the
millisecond.

The wall clock can step backwards (NTP, a VM resumed). Reusing a millisecond already
used would repeat ids, so a generator never goes below the last millisecond it used: a
small step back is waited out, a large one is refused (`ClockMovedBackwards`) rather
than stalling callers for longer than they would wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

TIMESTAMP_BITS = 41
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << TIMESTAMP_BITS) - 1
WORKER_SHIFT = SEQUENCE_BITS
TIMESTAMP_SHIFT = SEQUENCE_BITS + WORKER_BITS

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z; changing it reorders every id

MsClock = Callable[[], int]
Sleep = Callable[[float], Awaitable[None]]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ClockMovedBackwards(RuntimeError):
    """The clock is further behind the last id's millisecond than we are willing to wait."""


@dataclass(frozen=True, slots=True)
class IdParts:
    unix_ms: int
    worker_id: int
    sequence: int


def compose(unix_ms: int, worker_id: int, sequence: int) -> int:
    """The id for these parts; each is range-checked."""
    offset = unix_ms - EPOCH_MS
    if not 0 <= offset <= MAX_TIMESTAMP:
        raise ValueError(
            f"time {unix_ms} ms is outside the id range (epoch {EPOCH_MS} ms + 2**41 ms)"
        )
    check_worker_id(worker_id)
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence must be in 0..{MAX_SEQUENCE}, got {sequence}")
    return (offset << TIMESTAMP_SHIFT) | (worker_id << WORKER_SHIFT) | sequence


def decompose(snowflake: int) -> IdParts:
    """When, where and in what order `snowflake` was made."""
    if isinstance(snowflake, bool) or not isinstance(snowflake, int):
        raise TypeError(f"an id is an integer, got {type(snowflake).__name__}")
    if not 0 <= snowflake < 1 << 63:
        raise ValueError(f"an id is a non-negative 63-bit integer, got {snowflake}")
    return IdParts(
        unix_ms=(snowflake >> TIMESTAMP_SHIFT) + EPOCH_MS,
        worker_id=(snowflake >> WORKER_SHIFT) & MAX_WORKER_ID,
        sequence=snowflake & MAX_SEQUENCE,
    )


def check_worker_id(worker_id: int) -> None:
    if isinstance(worker_id, bool) or not isinstance(worker_id, int):
        raise TypeError(f"worker id must be an integer, got {type(worker_id).__name__}")
    if not 0 <= worker_id <= MAX_WORKER_ID:
        raise ValueError(f"worker id must be in 0..{MAX_WORKER_ID}, got {worker_id}")


class Snowflake:
    """Makes ids for one worker id; one instance per worker, used from one event loop.

    after_ms: ids only use milliseconds after this one. A worker id's previous holder
        may have used milliseconds up to it (and a clock behind them would repeat its
        ids), so the lease passes its high-water mark in here.
    max_backwards_ms: how far behind the clock may be and be waited out.
    """

    def __init__(
        self,
        worker_id: int,
        *,
        after_ms: int = 0,
        max_backwards_ms: int = 1000,
        clock: MsClock = wall_clock_ms,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        check_worker_id(worker_id)
        if max_backwards_ms < 0:
            raise ValueError(f"max_backwards_ms must be >= 0, got {max_backwards_ms}")
        self.worker_id = worker_id
        self._max_backwards_ms = max_backwards_ms
        self._clock = clock
        self._sleep = sleep
        # As if `after_ms` were used up: the first id takes a later millisecond.
        self._last_ms = after_ms
        self._sequence = MAX_SEQUENCE

    @property
    def last_ms(self) -> int:
        """The latest millisecond this generator has used (or must stay after)."""
        return self._last_ms

    async def next_id(self) -> int:
        while True:
            made = self.try_next()
            if isinstance(made, int):
                return made
            await self._sleep(made.seconds)

    def try_next(self) -> int | Wait:
        """An id now, or how long to wait before asking again; never blocks.

        No await in here: within one event loop it is atomic, so concurrent callers
        never share a (millisecond, sequence).
        """
        now = self._clock()
        if now > self._last_ms:
            self._last_ms, self._sequence = now, 0
        elif now == self._last_ms and self._sequence < MAX_SEQUENCE:
            self._sequence += 1
        elif now == self._last_ms:
            return Wait(0.001)  # 4096 ids this millisecond: the next one is free
        elif self._last_ms - now <= self._max_backwards_ms:
            return Wait((self._last_ms - now) / 1000)
        else:
            raise ClockMovedBackwards(
                f"clock is {self._last_ms - now} ms behind the last id's time (worker "
                f"{self.worker_id}); refusing ids rather than waiting more than "
                f"{self._max_backwards_ms} ms or repeating one"
            )
        return compose(self._last_ms, self.worker_id, self._sequence)


@dataclass(frozen=True, slots=True)
class Wait:
    """Not yet: the clock must move on by about this many seconds first."""

    seconds: float
