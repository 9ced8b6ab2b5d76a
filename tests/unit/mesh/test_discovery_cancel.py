"""A discovery watch stops when cancelled, even if redis-py turns the cancel into its error."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from blueprint.mesh.discovery.base import Instance
from blueprint.mesh.discovery.redis import RedisRegistry


class _SwallowingRegistry(RedisRegistry):
    """Reads that hang, and meet a cancel as redis-py has: with its own error."""

    def __init__(self, reading: asyncio.Event) -> None:
        super().__init__(
            aioredis.Redis(host="127.0.0.1", port=1),  # never connected to
            prefix="t", lease_ttl_seconds=3, resync_seconds=0.01,
        )  # fmt: skip
        self._subscribed.set()  # no listener wait
        self.reading = reading

    def _ensure_listener(self) -> None:
        pass

    async def instances(self, service: str) -> list[Instance]:
        self.reading.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RedisConnectionError("connection closed while reading") from None
        raise AssertionError("unreachable")


async def test_a_cancel_turned_into_a_redis_error_still_ends_the_watch() -> None:
    reading = asyncio.Event()
    registry = _SwallowingRegistry(reading)

    async def follow() -> None:
        async for _ in registry.watch("diag"):
            pass

    task = asyncio.create_task(follow())
    await asyncio.wait_for(reading.wait(), 30)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=30)
    assert task in done, "the watch went on after its cancel"
    with pytest.raises(asyncio.CancelledError):
        task.result()
