"""The cache against a real Redis: every strategy, and the stampede the issue names."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from blueprint.infra.cache import (
    Cache,
    CacheMetrics,
    CachePolicy,
    CacheWaitTimeout,
    StrSerializer,
)
from support.clock import FakeClock
from support.waiting import eventually

pytestmark = pytest.mark.redis


class CountingRedis(aioredis.Redis):
    """Counts the commands this client sends (scripts included), without MONITOR."""

    commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        return await super().execute_command(*args, **options)


class FixedRandom(random.Random):
    """random() always answers `value`: makes XFetch's coin deterministic."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class CountingLoader:
    def __init__(
        self, value: Any = "v", *, delay: float = 0.0, before: Callable[[], None] | None = None
    ) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0
        self._before = before
        self.gate: asyncio.Event | None = None  # when set here, loads wait for it

    async def __call__(self) -> Any:
        self.calls += 1
        if self._before is not None:
            self._before()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[Callable[[], CountingRedis]]:
    """Separate clients: each stands for one replica of a service."""
    made: list[CountingRedis] = []

    def make() -> CountingRedis:
        client = CountingRedis.from_url(redis_url)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def cache_factory(
    clients: Callable[[], CountingRedis], redis_prefix: str
) -> Callable[..., Cache[Any]]:
    def make(**options: Any) -> Cache[Any]:
        policy = options.pop("policy", CachePolicy())
        client = options.pop("redis", None) or clients()
        return Cache(client, prefix=f"{redis_prefix}:cache", policy=policy, **options)

    return make


async def test_a_miss_loads_and_caches_with_a_jittered_ttl(
    cache_factory: Callable[..., Cache[Any]], redis_url: str, redis_prefix: str
) -> None:
    cache = cache_factory(policy=CachePolicy(ttl_seconds=100, jitter=0.1))
    loader = CountingLoader({"url": "https://example.com/a"})
    assert await cache.get_or_load("abc", loader) == {"url": "https://example.com/a"}
    assert await cache.get_or_load("abc", loader) == {"url": "https://example.com/a"}
    assert loader.calls == 1
    raw = aioredis.Redis.from_url(redis_url)
    try:
        ttl_ms = await raw.pttl(f"{redis_prefix}:cache:v:abc")
        assert 90_000 - 1000 <= ttl_ms <= 110_000
    finally:
        await raw.aclose()


async def test_absent_keys_are_cached_negatively_for_the_short_ttl(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    clock = FakeClock()
    cache = cache_factory(
        policy=CachePolicy(ttl_seconds=300, negative_ttl_seconds=30, jitter=0), clock=clock
    )
    loader = CountingLoader(None)
    for _ in range(5):
        assert await cache.get_or_load("nosuch", loader) is None
    assert loader.calls == 1  # penetration stopped: one database read for five lookups
    clock.now += 31
    assert await cache.get_or_load("nosuch", loader) is None
    assert loader.calls == 2  # the negative entry expired, so the source is asked again
    loader.value = "created since"
    await cache.invalidate("nosuch")
    assert await cache.get_or_load("nosuch", loader) == "created since"


async def _stampede(caches: list[Cache[Any]], key: str, loader: CountingLoader, n: int) -> set[Any]:
    calls = [caches[i % len(caches)].get_or_load(key, loader) for i in range(n)]
    return set(await asyncio.gather(*calls))


async def test_500_concurrent_callers_on_a_cold_key_make_one_load(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    # Five replicas (own client, own in-process single flight), a hundred callers each:
    # the Redis lock is what keeps it to one load across them.
    caches = [cache_factory() for _ in range(5)]
    loader = CountingLoader("https://example.com/hot", delay=0.2)
    assert await _stampede(caches, "hot", loader, 500) == {"https://example.com/hot"}
    assert loader.calls == 1


async def test_500_concurrent_callers_on_a_just_expired_key_make_one_load(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    # Expiry by a shared fake clock, not by sleeping past a short TTL: on a loaded
    # machine the burst outlasts any TTL short enough to wait for, and the freshly
    # loaded value would expire again in the middle of it.
    clock = FakeClock()
    policy = CachePolicy(ttl_seconds=300, jitter=0, beta=0)
    caches = [cache_factory(policy=policy, clock=clock) for _ in range(5)]
    loader = CountingLoader("v1", delay=0.1)
    assert await caches[0].get_or_load("hot", loader) == "v1"
    clock.advance(301)  # expired for every replica at once: every caller misses
    loader.value = "v2"
    assert await _stampede(caches, "hot", loader, 500) == {"v2"}
    assert loader.calls == 2


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    clock = FakeClock()
    policy = CachePolicy(ttl_seconds=60, jitter=0, beta=0, stale_seconds=30)
    caches = [cache_factory(policy=policy, clock=clock) for _ in range(5)]
    loader = CountingLoader("v1")
    await caches[0].get_or_load("hot", loader)
    clock.now += 61  # expired, inside the stale window
    loader.value = "v2"
    loader.gate = asyncio.Event()  # the refresh cannot finish until the stampede is over
    assert await _stampede(caches, "hot", loader, 500) == {"v1"}  # so nobody waited for it
    loader.gate.set()
    await asyncio.gather(*(cache.drain() for cache in caches))
    assert loader.calls == 2
    assert await caches[3].get_or_load("hot", loader) == "v2"
    clock.now += 61 + 31  # past the stale window: a plain miss
    assert await caches[0].get("hot") is None


async def test_a_crashed_lock_holder_delays_the_load_only_until_its_lock_lapses(
    cache_factory: Callable[..., Cache[Any]], redis_url: str, redis_prefix: str
) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    lock = f"{redis_prefix}:cache:lock:hot"
    # A process took the load lock and died: nothing renews or releases it.
    await raw.set(lock, b"dead-token", px=1000)
    lock_at_load: list[bytes | None] = []

    async def load() -> str:
        lock_at_load.append(await raw.get(lock))  # by now the loader's own token
        return "v"

    cache = cache_factory(policy=CachePolicy(lock_ttl_seconds=1.0))
    try:
        # It respects the lock (the load starts only once the lock is gone)...
        assert await asyncio.wait_for(cache.get_or_load("hot", load), 5) == "v"
    finally:
        await raw.aclose()
    assert len(lock_at_load) == 1
    assert lock_at_load[0] != b"dead-token"  # ...and loads once it has lapsed


async def test_a_slow_loader_renews_its_lock_so_nobody_loads_twice(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    # Renewed every third of its TTL: a loaded machine may stall the renewal by up to
    # two thirds of it (1 s here) before the lock could lapse.
    policy = CachePolicy(lock_ttl_seconds=1.5)
    first, second = cache_factory(policy=policy), cache_factory(policy=policy)
    loader = CountingLoader("v", delay=4.6)  # over three lock TTLs
    results = await asyncio.gather(
        first.get_or_load("slow", loader), second.get_or_load("slow", loader)
    )
    assert results == ["v", "v"]
    assert loader.calls == 1


async def test_waiting_on_someone_elses_load_is_bounded(
    cache_factory: Callable[..., Cache[Any]], redis_url: str, redis_prefix: str
) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    await raw.set(f"{redis_prefix}:cache:lock:stuck", b"token", px=10_000)
    await raw.aclose()
    cache = cache_factory(policy=CachePolicy(wait_seconds=0.2))
    with pytest.raises(CacheWaitTimeout, match="stuck"):
        await cache.get_or_load("stuck", CountingLoader("v"))


async def test_a_failing_loader_fails_its_callers_and_caches_nothing(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    cache = cache_factory()
    loader = CountingLoader(RuntimeError("database down"), delay=0.05)
    results = await asyncio.gather(
        *(cache.get_or_load("k", loader) for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert loader.calls == 1  # the callers shared the one failed attempt
    loader.value = "back"
    assert await cache.get_or_load("k", loader) == "back"


async def test_xfetch_refreshes_early_exactly_when_the_coin_says_so(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    clock = FakeClock(1000.0)

    def takes_five_seconds() -> None:
        clock.now += 5.0  # δ = 5 s, as the stored entry will record

    policy = CachePolicy(ttl_seconds=100, jitter=0, beta=1.0)
    # rand = 1 - random() = 0.5: pushes now by 5·ln 2 = 3.47 s
    calm = cache_factory(policy=policy, clock=clock, rng=FixedRandom(0.5))
    # rand = 0.1: pushes now by 5·ln 10 = 11.5 s
    eager = cache_factory(policy=policy, clock=clock, rng=FixedRandom(0.9))
    loader = CountingLoader("v1", before=takes_five_seconds)
    await calm.get_or_load("k", loader)  # stored at 1005, expiry 1105
    clock.now = 1095.0  # ten seconds before expiry
    loader.value = "v2"
    assert await calm.get_or_load("k", loader) == "v1"
    await calm.drain()
    assert loader.calls == 1  # 3.47 < 10: no refresh yet
    assert await eager.get_or_load("k", loader) == "v1"  # served at once...
    await eager.drain()
    assert loader.calls == 2  # ...and refreshed in the background: 11.5 >= 10
    assert await calm.get_or_load("k", loader) == "v2"


async def test_near_cache_answers_without_redis_and_expires(
    clients: Callable[[], CountingRedis], cache_factory: Callable[..., Cache[Any]]
) -> None:
    clock = FakeClock()
    client = clients()
    cache = cache_factory(
        redis=client,
        clock=clock,
        policy=CachePolicy(near_ttl_seconds=1.0, near_max_entries=2, beta=0),
    )
    loader = CountingLoader("v")
    await cache.get_or_load("a", loader)
    before = client.commands
    for _ in range(100):
        assert await cache.get_or_load("a", loader) == "v"
    assert client.commands == before  # served in-process: not one command
    clock.now += 1.01
    assert await cache.get_or_load("a", loader) == "v"
    assert client.commands == before + 1  # near copy expired: one GET, still a Redis hit
    assert loader.calls == 1
    await cache.get_or_load("b", loader)
    await cache.get_or_load("c", loader)  # bound of two: "a" is evicted
    before = client.commands
    await cache.get_or_load("c", loader)
    assert client.commands == before
    await cache.get_or_load("a", loader)
    assert client.commands == before + 1


async def test_writes_invalidation_and_prefixes(
    cache_factory: Callable[..., Cache[Any]], redis_url: str, redis_prefix: str
) -> None:
    cache = cache_factory()
    other = Cache(aioredis.Redis.from_url(redis_url), prefix=f"{redis_prefix}:other")
    loader = CountingLoader("from source")
    await cache.set("k", "written through")
    assert await cache.get_or_load("k", loader) == "written through"
    assert await cache.get("k") == "written through"
    assert await other.get("k") is None  # another prefix, another namespace
    await cache.invalidate("k")
    assert await cache.get("k") is None
    assert await cache.get_or_load("k", loader) == "from source"
    await other._redis.aclose()


async def test_pluggable_serializer_and_unreadable_entries_are_reloaded(
    cache_factory: Callable[..., Cache[Any]], redis_url: str, redis_prefix: str
) -> None:
    cache: Cache[str] = cache_factory(serializer=StrSerializer())
    raw = aioredis.Redis.from_url(redis_url)
    await raw.set(f"{redis_prefix}:cache:v:k", b"garbage someone wrote")
    await raw.aclose()
    loader = CountingLoader("text")
    assert await cache.get_or_load("k", loader) == "text"
    assert loader.calls == 1


async def test_metrics_count_where_reads_were_answered(
    cache_factory: Callable[..., Cache[Any]],
) -> None:
    registry = CollectorRegistry()
    cache = cache_factory(metrics=CacheMetrics(registry), name="links")
    loader = CountingLoader("v")
    await cache.get_or_load("k", loader)
    await cache.get_or_load("k", loader)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"cache": "links", **labels})

    assert sample("blueprint_cache_lookups_total", result="miss") == 1
    assert sample("blueprint_cache_lookups_total", result="hit") == 1
    assert sample("blueprint_cache_loads_total", reason="miss") == 1
    assert sample("blueprint_cache_load_duration_seconds_count") == 1


async def test_metrics_count_stampede_locks_taken_waited_for_and_timed_out(
    cache_factory: Callable[..., Cache[Any]],
    clients: Callable[[], CountingRedis],
    redis_url: str,
    redis_prefix: str,
) -> None:
    registry = CollectorRegistry()
    metrics = CacheMetrics(registry)
    redises = [clients() for _ in range(5)]  # five replicas, ten callers each
    caches = [cache_factory(metrics=metrics, name="links", redis=r) for r in redises]
    loader = CountingLoader("v")
    loader.gate = asyncio.Event()
    stampede = asyncio.create_task(_stampede(caches, "hot", loader, 50))
    # Every replica has read, tried the lock and read again while the one load waits.
    await eventually(lambda: loader.calls == 1 and all(r.commands >= 3 for r in redises), 30)
    loader.gate.set()
    assert await stampede == {"v"}

    def locks(outcome: str) -> float | None:
        labels = {"cache": "links", "outcome": outcome}
        return registry.get_sample_value("blueprint_cache_stampede_locks_total", labels)

    assert (locks("acquired"), locks("waited")) == (1, 4)  # one flight per replica
    raw = aioredis.Redis.from_url(redis_url)
    await raw.set(f"{redis_prefix}:cache:lock:stuck", b"token", px=10_000)
    await raw.aclose()
    waiting = cache_factory(policy=CachePolicy(wait_seconds=0.1), metrics=metrics, name="links")
    with pytest.raises(CacheWaitTimeout):
        await waiting.get_or_load("stuck", CountingLoader("v"))
    assert locks("timed_out") == 1


async def test_bad_input_is_refused_clearly(
    cache_factory: Callable[..., Cache[Any]], redis_url: str
) -> None:
    cache = cache_factory()
    loader = CountingLoader("v")
    bad: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: cache.get_or_load("", loader), "non-empty"),
        (lambda: cache.get_or_load("x" * 1025, loader), "longer than 1024"),
        (lambda: cache.get_or_load("k", loader, ttl=0), "ttl must be > 0"),
        (lambda: cache.set("k", "v", ttl=-5), "ttl must be > 0"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            await call()
    assert loader.calls == 0
    decoding = aioredis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        Cache(decoding, prefix="p")
    with pytest.raises(ValueError, match="prefix"):
        Cache(aioredis.Redis.from_url(redis_url), prefix="has space")
    await decoding.aclose()
