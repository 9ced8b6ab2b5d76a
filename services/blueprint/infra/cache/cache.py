"""Cache-aside on Redis, with the guide's defences against what hurts a database.

One call, `get_or_load(key, loader)`, tries each layer in turn:

1. near cache: an in-process LRU copy of hot keys for a short TTL (opt-in).
2. Redis, fresh: returned as is; XFetch may start one early refresh in the background.
3. Redis, stale (within the stale window after expiry): returned as is while one caller
   refreshes in the background (stale-while-revalidate, opt-in).
4. Miss: callers in this process share one load (single flight); across processes a
   Redis lock (SET NX PX, renewed while the loader runs, so a crashed holder frees it
   after one lock TTL) lets one caller load while the others poll for the value with
   a bounded backoff and then read it.

A loader returning None means "no such key": that is cached too (negative caching),
briefly, so lookups of absent keys (cache penetration) do not reach the database each
time. Every write gets TTL jitter. Redis errors propagate: the caller decides whether
to fall back to its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from blueprint.infra.cache.entry import CorruptEntry, Entry
from blueprint.infra.cache.metrics import CacheMetrics, LoadReason, LockOutcome, Lookup
from blueprint.infra.cache.near import NearCache
from blueprint.infra.cache.policy import CachePolicy, jittered_ttl, should_refresh_early
from blueprint.infra.cache.serializers import JsonSerializer, SerializationError, Serializer
from blueprint.infra.cache.singleflight import SingleFlight
from blueprint.mesh.resilience import deadlines

log = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[], Awaitable[T | None]]

MAX_KEY_LENGTH = 1024


class CacheWaitTimeout(TimeoutError):
    """Another caller's load did not finish within the policy's wait."""


class Cache(Generic[T]):
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        policy: CachePolicy | None = None,
        serializer: Serializer[T] | None = None,
        name: str = "cache",
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metrics: CacheMetrics | None = None,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("Cache needs a Redis client with decode_responses=False")
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"cache prefix must be non-empty without spaces, got {prefix!r}")
        self._redis = redis
        self._prefix = prefix
        self.policy = policy or CachePolicy()
        self._serializer: Serializer[Any] = serializer or JsonSerializer()
        self.name = name
        self._clock = clock  # wall time: expiries are shared with other processes
        self._rng = rng or random.Random()
        self._metrics = metrics
        self._near: NearCache[T | None] = NearCache(self.policy.near_max_entries)
        self._flights: SingleFlight[T | None] = SingleFlight()
        self._refreshes: dict[str, asyncio.Task[None]] = {}

    # -- public API ---------------------------------------------------------------

    async def get_or_load(
        self, key: str, loader: Loader[T], *, ttl: float | None = None
    ) -> T | None:
        """The value for `key`, loading (and caching) it on a miss; None if absent."""
        full = self._key(key)
        ttl = self._ttl(ttl)
        if self.policy.near_ttl_seconds > 0:
            found, near_value = self._near.get(full, self._clock())
            if found:
                self._lookup("near")
                return near_value
        cached = await self._read(full)
        if cached is not None:
            entry, value = cached
            now = self._clock()
            if now < entry.expiry:
                self._lookup("negative" if entry.negative else "hit")
                if not entry.negative and self._xfetch(entry, now):
                    self._refresh_later(key, loader, ttl, entry.expiry, "early")
                return self._remember(full, cached, now)
            if not entry.negative and now < entry.expiry + self.policy.stale_seconds:
                self._lookup("stale")
                self._refresh_later(key, loader, ttl, entry.expiry, "stale")
                return value
        self._lookup("miss")
        return await self._flights.run(full, lambda: self._load_shared(key, loader, ttl))

    async def get(self, key: str) -> T | None:
        """The cached value (fresh or within the stale window), or None; never loads."""
        cached = await self._read(self._key(key))
        if cached is None:
            return None
        entry, value = cached
        if self._clock() >= entry.expiry + self.policy.stale_seconds:
            return None
        return value

    async def set(self, key: str, value: T, *, ttl: float | None = None) -> None:
        """Write through: after the source changed, so readers need not wait for a TTL."""
        full = self._key(key)
        await self._store(full, value, self._ttl(ttl), delta=0.0)

    async def invalidate(self, key: str) -> None:
        """Forget `key` here and in Redis (other processes' near copies age out)."""
        full = self._key(key)
        self._near.discard(full)
        await self._redis.delete(full)

    async def drain(self) -> None:
        """Wait for background refreshes started so far."""
        while self._refreshes:
            await asyncio.gather(*self._refreshes.values(), return_exceptions=True)

    async def aclose(self) -> None:
        for task in self._refreshes.values():
            task.cancel()
        await self.drain()

    # -- layers ---------------------------------------------------------------------

    def _key(self, key: str) -> str:
        """The Redis key of a caller's key, checked once where the caller hands it in."""
        if not isinstance(key, str) or not key:
            raise ValueError("cache key must be a non-empty string")
        if len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"cache key longer than {MAX_KEY_LENGTH} characters")
        return self._value_key(key)

    def _value_key(self, key: str) -> str:
        return f"{self._prefix}:v:{key}"

    def _lock(self, key: str) -> Lock:
        # Its own namespace: no caller's key can collide with a lock.
        return Lock(
            self._redis,
            f"{self._prefix}:lock:{key}",
            timeout=self.policy.lock_ttl_seconds,
            blocking=False,
            thread_local=False,
        )

    def _ttl(self, ttl: float | None) -> float:
        if ttl is None:
            return self.policy.ttl_seconds
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        return ttl

    async def _read(self, full: str) -> tuple[Entry, T | None] | None:
        """The entry and its value; None when absent or unreadable (then it is reloaded)."""
        raw = await self._redis.get(full)
        if not isinstance(raw, bytes):  # None: absent (the client never decodes, see __init__)
            return None
        try:
            entry = Entry.decode(raw)
            value: T | None = None if entry.negative else self._serializer.loads(entry.payload)
        except (CorruptEntry, SerializationError) as exc:
            log.warning("ignoring unreadable cache entry", extra={"key": full, "reason": str(exc)})
            return None
        return entry, value

    def _remember(self, full: str, cached: tuple[Entry, T | None], now: float) -> T | None:
        entry, value = cached
        if self.policy.near_ttl_seconds > 0:
            expires_at = min(now + self.policy.near_ttl_seconds, entry.expiry)
            self._near.put(full, value, expires_at)
        return value

    def _xfetch(self, entry: Entry, now: float) -> bool:
        rand = 1.0 - self._rng.random()  # (0, 1]
        return should_refresh_early(
            now=now, delta=entry.delta, expiry=entry.expiry, beta=self.policy.beta, rand=rand
        )

    # -- loading ----------------------------------------------------------------------

    async def _load_shared(self, key: str, loader: Loader[T], ttl: float) -> T | None:
        """One loader run among all processes; the others wait for its result."""
        full = self._value_key(key)
        deadline = time.monotonic() + self.policy.wait_seconds
        pause = self.policy.poll_initial_seconds
        while True:
            lock = self._lock(key)
            if await lock.acquire():
                try:
                    # The previous holder may have written it between our read and our lock.
                    cached = await self._read(full)
                    if cached is not None and self._clock() < cached[0].expiry:
                        self._locked("waited")
                        return self._remember(full, cached, self._clock())
                    self._locked("acquired")
                    return await self._load(full, loader, ttl, lock, "miss")
                finally:
                    await self._release(lock)
            cached = await self._read(full)
            if cached is not None and self._clock() < cached[0].expiry:  # the holder's result
                self._locked("waited")
                return self._remember(full, cached, self._clock())
            if time.monotonic() >= deadline:
                self._locked("timed_out")
                raise CacheWaitTimeout(
                    f"waited {self.policy.wait_seconds}s for another caller to load {full!r}"
                )
            await asyncio.sleep(pause * (0.5 + self._rng.random()))
            pause = min(pause * 2, self.policy.poll_max_seconds)

    def _refresh_later(
        self, key: str, loader: Loader[T], ttl: float, seen_expiry: float, reason: LoadReason
    ) -> None:
        if key in self._refreshes:
            return
        # Outlives the read that saw the entry aging, so not bound by that call's deadline.
        task = asyncio.create_task(
            self._refresh(key, loader, ttl, seen_expiry, reason),
            context=deadlines.without_incoming(),
        )
        self._refreshes[key] = task
        task.add_done_callback(lambda _: self._refreshes.pop(key, None))

    async def _refresh(
        self, key: str, loader: Loader[T], ttl: float, seen_expiry: float, reason: LoadReason
    ) -> None:
        full = self._value_key(key)
        lock = self._lock(key)
        try:
            if not await lock.acquire():
                self._locked("busy")
                return  # someone else is refreshing it
            try:
                cached = await self._read(full)
                if cached is not None and cached[0].expiry > seen_expiry:
                    return  # refreshed by someone else since we read it
                await self._load(full, loader, ttl, lock, reason)
            finally:
                await self._release(lock)
        except Exception:
            # The stale value stays until the stale window closes; the next read retries.
            log.warning("background cache refresh failed", extra={"key": full}, exc_info=True)

    async def _load(
        self, full: str, loader: Loader[T], ttl: float, lock: Lock, reason: LoadReason
    ) -> T | None:
        keep_alive = asyncio.create_task(self._keep_lock(lock))
        try:
            started = self._clock()
            value = await loader()
            delta = max(0.0, self._clock() - started)
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
        if self._metrics is not None:
            self._metrics.load(self.name, reason, delta)
        return await self._store(full, value, ttl, delta)

    async def _keep_lock(self, lock: Lock) -> None:
        """Renew the lock while the loader runs, so only a crash lets it lapse."""
        while True:
            await asyncio.sleep(self.policy.lock_ttl_seconds / 3)
            try:
                await lock.reacquire()
            except LockError:
                log.warning("lost the cache load lock; another caller may load too")
                return

    async def _store(self, full: str, value: T | None, ttl: float, delta: float) -> T | None:
        now = self._clock()
        if value is None:
            if self.policy.negative_ttl_seconds == 0:
                return None
            life = jittered_ttl(self.policy.negative_ttl_seconds, self.policy.jitter, self._rng)
            entry = Entry(b"", delta, now + life, negative=True)
            keep = life
        else:
            life = jittered_ttl(ttl, self.policy.jitter, self._rng)
            entry = Entry(self._serializer.dumps(value), delta, now + life)
            keep = life + self.policy.stale_seconds
        await self._redis.set(full, entry.encode(), px=max(1, round(keep * 1000)))
        # Read back through the serializer, so a miss returns what a hit would (JSON: lists).
        stored = None if entry.negative else self._serializer.loads(entry.payload)
        return self._remember(full, (entry, stored), now)

    async def _release(self, lock: Lock) -> None:
        with contextlib.suppress(LockError):  # it lapsed: someone else may hold it now
            await lock.release()

    def _lookup(self, result: Lookup) -> None:
        if self._metrics is not None:
            self._metrics.lookup(self.name, result)

    def _locked(self, outcome: LockOutcome) -> None:
        if self._metrics is not None:
            self._metrics.lock(self.name, outcome)
