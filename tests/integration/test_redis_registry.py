"""The Redis registry against a real Redis server (the machine's, or embedded)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from blueprint.mesh.discovery import Instance, RedisRegistry
from blueprint.mesh.discovery.redis import _encode
from support.redis_server import delete_prefix

TTL = 1.0
# A resync so slow that a change seen within a test's wait came by notification.
NOTIFICATION_ONLY = 60.0


def _registry(url: str, prefix: str, resync: float = 0.25) -> RedisRegistry:
    return RedisRegistry.from_url(url, prefix=prefix, lease_ttl_seconds=TTL, resync_seconds=resync)


@pytest.fixture
async def registry(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisRegistry]:
    reg = _registry(redis_url, redis_prefix)
    yield reg
    await reg.close()


def _instance(n: int, service: str = "diag") -> Instance:
    return Instance(
        service, f"{service}-{n}", f"127.0.0.1:{5000 + n}", weight=n, metadata={"n": str(n)}
    )


async def _next(watch: AsyncIterator[list[Instance]], timeout: float) -> list[Instance]:
    return await asyncio.wait_for(anext(watch), timeout)


async def test_registered_instances_round_trip(registry: RedisRegistry) -> None:
    await registry.register(_instance(1))
    await registry.register(_instance(2))
    await registry.register(_instance(1, service="other"))
    assert await registry.instances("diag") == [_instance(1), _instance(2)]
    assert await registry.services() == ["diag", "other"]
    await registry.deregister(_instance(1))
    assert await registry.instances("diag") == [_instance(2)]


async def test_heartbeats_keep_a_lease_alive_past_its_ttl(registry: RedisRegistry) -> None:
    await registry.register(_instance(1))
    await asyncio.sleep(TTL * 2.5)
    assert [i.instance_id for i in await registry.instances("diag")] == ["diag-1"]


async def test_a_join_is_announced(
    redis_url: str, redis_prefix: str, registry: RedisRegistry
) -> None:
    watcher = _registry(redis_url, redis_prefix, resync=NOTIFICATION_ONLY)
    watch = watcher.watch("diag")
    try:
        assert await _next(watch, 2) == []
        await registry.register(_instance(1))
        assert await _next(watch, 5) == [_instance(1)]
    finally:
        await watch.aclose()
        await watcher.close()


async def test_a_silent_death_leaves_the_watch_within_ttl_plus_one_second(
    redis_url: str, redis_prefix: str, registry: RedisRegistry
) -> None:
    watcher = _registry(redis_url, redis_prefix)
    watch = watcher.watch("diag")
    try:
        assert await _next(watch, 2) == []
        await registry.register(_instance(1))
        assert await _next(watch, 2) == [_instance(1)]

        # A process killed with SIGKILL stops heartbeating and says nothing.
        owner = _registry(redis_url, redis_prefix)
        await owner.register(_instance(2))
        assert await _next(watch, 2) == [_instance(1), _instance(2)]
        await owner.close()  # cancels the heartbeat without deregistering
        died = time.monotonic()
        assert await _next(watch, TTL + 2) == [_instance(1)]
        assert time.monotonic() - died <= TTL + 1.0
    finally:
        await watch.aclose()
        await watcher.close()


async def test_resync_recovers_changes_missed_by_pubsub(
    redis_url: str, redis_prefix: str, registry: RedisRegistry
) -> None:
    watch = registry.watch("diag")
    try:
        assert await _next(watch, 2) == []
        # Write a lease behind the registry's back: no notification is published.
        raw = aioredis.Redis.from_url(redis_url)
        try:
            instance = _instance(3)
            base = f"{redis_prefix}:discovery:svc:diag"
            seconds, micros = await raw.time()
            expiry = seconds * 1000 + micros // 1000 + 60_000
            await raw.zadd(base, {instance.instance_id: expiry})
            await raw.hset(f"{base}:details", instance.instance_id, _encode(instance))
        finally:
            await raw.aclose()
        assert await _next(watch, 1.0) == [instance]
    finally:
        await watch.aclose()


async def test_deregister_is_announced_immediately(
    redis_url: str, redis_prefix: str, registry: RedisRegistry
) -> None:
    watcher = _registry(redis_url, redis_prefix, resync=NOTIFICATION_ONLY)
    await registry.register(_instance(1))
    watch = watcher.watch("diag")
    try:
        assert await _next(watch, 2) == [_instance(1)]
        await registry.deregister(_instance(1))
        assert await _next(watch, 5) == []
    finally:
        await watch.aclose()
        await watcher.close()


async def test_a_change_of_serving_flag_is_announced_and_kept_by_the_heartbeat(
    redis_url: str, redis_prefix: str, registry: RedisRegistry
) -> None:
    watcher = _registry(redis_url, redis_prefix, resync=NOTIFICATION_ONLY)
    await registry.register(_instance(1))
    watch = watcher.watch("diag")
    try:
        assert await _next(watch, 2) == [_instance(1)]
        not_serving = dataclasses.replace(_instance(1), serving=False)
        await registry.register(not_serving)  # the same lease, new details: announced
        assert await _next(watch, 5) == [not_serving]
        await asyncio.sleep(TTL * 1.5)  # heartbeats renew it with the new details
        assert await registry.instances("diag") == [not_serving]
    finally:
        await watch.aclose()
        await watcher.close()


async def test_prefixes_isolate_registries(redis_url: str, redis_prefix: str) -> None:
    mine = _registry(redis_url, redis_prefix)
    theirs = _registry(redis_url, f"{redis_prefix}-other")
    try:
        await mine.register(_instance(1))
        assert await theirs.instances("diag") == []
    finally:
        await mine.close()
        await theirs.close()
        delete_prefix(redis_url, f"{redis_prefix}-other")
