"""In-process single flight: concurrent callers for one key share one load.

This stops a process from sending hundreds of callers to the Redis lock; the lock
then decides among processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(work())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._land(key, done))
        # Shielded: one caller giving up (its deadline) must not cancel the others' load.
        return await asyncio.shield(flight)

    def _land(self, key: str, flight: asyncio.Future[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved, so an error nobody awaited is not logged as lost

    def __len__(self) -> int:
        return len(self._flights)
