"""Redis-backed registry: leases with a TTL, heartbeats, change notifications, resync.

Each service is a sorted set of instance ids scored by lease expiry (in Redis's
own clock, so hosts' clocks never matter) plus a hash of instance details.
Registrations publish on one channel; clients also re-read on a timer because
pub/sub loses messages while a subscriber is disconnected, and because a
killed instance publishes nothing: its lease simply runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from blueprint.mesh.discovery.base import Instance, Registry
from blueprint.mesh.tasks import cancel_and_wait, reraise_if_cancelled

log = logging.getLogger(__name__)

# How long a new watch waits for the change subscription before its first read; with
# Redis down the read fails anyway and the watch retries on its resync timer.
_SUBSCRIBE_WAIT_SECONDS = 2.0

# Adds or renews a lease; purges lapsed ones; announces when membership or an
# instance's details (its serving flag) changed.
# KEYS: leases zset, details hash, services set. ARGV: id, details, ttl ms, channel, service.
_RENEW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  added = 1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[5])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  redis.call('HDEL', KEYS[2], unpack(lapsed))
end
if added == 1 or #lapsed > 0 then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return added
"""

# Live instances with their lease expiry; purges (and announces) lapsed ones.
# KEYS: leases zset, details hash. ARGV: channel, service.
_LIST = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  redis.call('HDEL', KEYS[2], unpack(lapsed))
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms, '+inf')
if #ids == 0 then
  return {}
end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""

# KEYS: leases zset, details hash. ARGV: id, channel, service.
_REMOVE = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return removed
"""


def _encode(instance: Instance) -> str:
    return json.dumps(
        {
            "service": instance.service,
            "instance_id": instance.instance_id,
            "address": instance.address,
            "weight": instance.weight,
            "metadata": dict(instance.metadata),
            "serving": instance.serving,
        },
        separators=(",", ":"),
    )


def _decode(raw: str) -> Instance:
    data: dict[str, Any] = json.loads(raw)
    return Instance(
        service=data["service"],
        instance_id=data["instance_id"],
        address=data["address"],
        weight=int(data.get("weight", 1)),
        metadata=dict(data.get("metadata", {})),
        serving=bool(data.get("serving", True)),
    )


class RedisRegistry(Registry):
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        lease_ttl_seconds: float,
        resync_seconds: float,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_ms = max(1, int(lease_ttl_seconds * 1000))
        self._heartbeat_seconds = lease_ttl_seconds / 3  # two beats may be lost
        self._resync_seconds = resync_seconds
        self._channel = f"{prefix}:discovery:changes"
        self._renew = client.register_script(_RENEW)
        self._list = client.register_script(_LIST)
        self._remove = client.register_script(_REMOVE)
        self._heartbeats: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, lease_ttl_seconds: float, resync_seconds: float
    ) -> RedisRegistry:
        client = aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=10)
        return cls(
            client,
            prefix=prefix,
            lease_ttl_seconds=lease_ttl_seconds,
            resync_seconds=resync_seconds,
        )

    def _keys(self, service: str) -> list[str]:
        base = f"{self._prefix}:discovery:svc:{service}"
        return [base, f"{base}:details"]

    async def register(self, instance: Instance) -> None:
        """Registers (or re-registers with new details, e.g. not serving). The heartbeat
        carries the new details from now on, even if Redis is away right now."""
        old = self._heartbeats.pop(instance.instance_id, None)
        if old is not None:
            old.cancel()
        self._heartbeats[instance.instance_id] = asyncio.create_task(
            self._beat(instance), name=f"heartbeat {instance.instance_id}"
        )
        await self._renew_lease(instance)

    async def _renew_lease(self, instance: Instance) -> None:
        await self._renew(
            keys=[*self._keys(instance.service), f"{self._prefix}:discovery:services"],
            args=[
                instance.instance_id,
                _encode(instance),
                self._ttl_ms,
                self._channel,
                instance.service,
            ],
        )

    async def _beat(self, instance: Instance) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                await self._renew_lease(instance)
            except RedisError as exc:
                reraise_if_cancelled(exc)
                # Keep serving; the lease lapses only if Redis stays away for a TTL.
                log.warning("heartbeat for %s failed: %s", instance.instance_id, exc)

    async def deregister(self, instance: Instance) -> None:
        beat = self._heartbeats.pop(instance.instance_id, None)
        if beat is not None:
            await cancel_and_wait([beat])
        await self._remove(
            keys=self._keys(instance.service),
            args=[instance.instance_id, self._channel, instance.service],
        )

    async def instances(self, service: str) -> list[Instance]:
        raws = await self._list(keys=self._keys(service), args=[self._channel, service])
        found = [_decode(raw) for raw in raws if raw is not None]
        return sorted(found, key=lambda i: i.instance_id)

    async def services(self) -> list[str]:
        names: set[str] = await self._redis.smembers(  # type: ignore[assignment]
            f"{self._prefix}:discovery:services"
        )
        live = []
        for name in sorted(names):
            if await self.instances(name):
                live.append(name)
        return live

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        self._ensure_listener()
        changed = asyncio.Event()
        self._watchers[service].add(changed)
        last: list[Instance] | None = None
        # The first read waits until notifications flow: a change published between
        # that read and the subscription would otherwise wait for the resync.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SUBSCRIBE_WAIT_SECONDS):
                await self._subscribed.wait()
        try:
            while True:
                changed.clear()
                try:
                    current = await self.instances(service)
                except RedisError as exc:
                    reraise_if_cancelled(exc)
                    log.warning("discovery read for %s failed: %s", service, exc)
                else:
                    if current != last:
                        last = current
                        yield current
                with contextlib.suppress(TimeoutError):
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can turn a
                    # cancellation racing the timeout into TimeoutError, which this
                    # suppress would swallow, and the watch would never end.
                    async with asyncio.timeout(self._resync_seconds):
                        await changed.wait()
        finally:
            self._watchers[service].discard(changed)

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="discovery listener")

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                backoff = 0.1
                self._subscribed.set()
                # Whatever changed while no one listened is re-read now.
                for events in self._watchers.values():
                    for changed in events:
                        changed.set()
                async for message in pubsub.listen():
                    for changed in self._watchers.get(message["data"], ()):
                        changed.set()
            except RedisError as exc:
                reraise_if_cancelled(exc)
                self._subscribed.clear()
                log.warning("discovery notifications lost (%s); resync covers the gap", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        tasks = [*self._heartbeats.values(), *([self._listener] if self._listener else [])]
        self._heartbeats.clear()
        await cancel_and_wait(tasks)
        await self._redis.aclose()
