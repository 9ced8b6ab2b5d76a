"""Closed-loop load for resilience tests: N callers, each calling until told to stop."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc.aio


@dataclass
class LoadResult:
    served_by: Counter[str] = field(default_factory=Counter)
    failures: list[grpc.aio.AioRpcError] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.served_by.values()) + len(self.failures)


async def closed_loop(
    call: Callable[[], Awaitable[str]], stop: asyncio.Event, concurrency: int
) -> LoadResult:
    """`call` returns the serving instance id; failures are collected, not raised."""
    result = LoadResult()

    async def caller() -> None:
        while not stop.is_set():
            try:
                result.served_by[await call()] += 1
            except grpc.aio.AioRpcError as error:
                result.failures.append(error)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return result
