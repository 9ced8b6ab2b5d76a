"""The shortener's read path, tier by tier, and the stampede a hot key's expiry causes.

Resolve runs through the shortener's own `LinkService` against a real Redis (an
embedded redis-server) and a real database: a SQLite file, the local default, or the
PostgreSQL database named by BLUEPRINT_BENCH_DATABASE_URL (a scratch database: the
shortener's tables are created in it). In-process, without gRPC, so the figures are
those of the tiers and not of the transport. Three ways to answer, in one run:

- near cache: the in-process copy of hot codes (no network at all);
- Redis: the cache-aside entry, one GET per call (near cache off);
- database: no cache, one SELECT per call, the baseline of the ratios.

A fourth row adds what Resolve also does in production: publish a click to the queue.
Then the clicks' side (`bench/clicks.py`): one real replica's Resolve calls/s over gRPC,
times three, beside one click worker's clicks/s, with batches and one at a time.

The stampede: a hot link's cache entry expires while 500 callers want it, spread over 4
cache clients (as 4 replicas of the service would be). Without protection (plain
cache-aside: GET, miss, SELECT, SET) nearly every caller reaches the database; with the
shortener's cache (single flight in each process, a Redis lock across them, XFetch) one
does. Counted at the store, per expiry, over several expiries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.clicks import QUICK_CLICKS, ClickParameters
from bench.clicks import measure as measure_clicks
from bench.common import Sample, closed_loop, print_table, progress, write_result
from blueprint.infra.cache import Cache, CachePolicy
from blueprint.infra.queue import Priority, WorkQueue
from blueprint.infra.sql import Database, ShardedDatabase, migrate, sqlite_url
from blueprint.local.embedded_redis import EmbeddedRedis
from blueprint.shortener.clicks import CLICK_STREAM, Click
from blueprint.shortener.links import LinkService
from blueprint.shortener.records import Link
from blueprint.shortener.store import ShortenerStore

NAME = "shortener"
SERVICE = "shortener"
DATABASE_URL_VARIABLE = "BLUEPRINT_BENCH_DATABASE_URL"


@dataclass(frozen=True)
class Parameters:
    links: int = 1000  # codes the callers pick from, uniformly
    concurrency: int = 16
    warmup_seconds: float = 0.5
    duration_seconds: float = 3.0  # per tier
    callers: int = 500  # the stampede
    cache_clients: int = 4
    expiries: int = 5
    stampede_ttl_seconds: float = 0.5
    clicks: ClickParameters = field(default_factory=ClickParameters)


FULL = Parameters()
QUICK = Parameters(
    links=100,
    warmup_seconds=0.05,
    duration_seconds=0.3,
    expiries=2,
    stampede_ttl_seconds=0.3,
    clicks=QUICK_CLICKS,
)


class CountingStore(ShortenerStore):
    """The shortener's store, counting the link reads that reach the database."""

    link_reads = 0

    async def find_link(self, code: str) -> Link | None:
        self.link_reads += 1
        return await super().find_link(code)


class Ids:
    """Resolve makes no ids; the service only needs somewhere to ask."""

    async def next_id(self) -> int:
        raise AssertionError("the benchmark creates links directly")


def _policy(**overrides: Any) -> CachePolicy:
    # Entries outlive the run, so the Redis tier stays the Redis tier.
    return CachePolicy(**{"ttl_seconds": 3600.0, "jitter": 0.0, **overrides})


@contextlib.asynccontextmanager
async def _environment() -> AsyncIterator[tuple[aioredis.Redis, CountingStore, str, str, str]]:
    """Redis, the store over a fresh database, the database's description, and the URLs
    of both (for the processes the clicks' figures start)."""
    with tempfile.TemporaryDirectory(prefix="bench-shortener-") as scratch:
        redis_server = EmbeddedRedis(Path(scratch) / "redis")
        url = redis_server.start()
        given = os.environ.get(DATABASE_URL_VARIABLE)
        database_url = given or str(sqlite_url(Path(scratch), SERVICE))
        database = Database.from_urls(database_url)
        sharded = ShardedDatabase([database])
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
        redis = aioredis.Redis(connection_pool=pool)
        try:
            await migrate(SERVICE, sharded)
            described = "PostgreSQL" if given else "SQLite (the local default)"
            yield redis, CountingStore(sharded), described, url, database_url
        finally:
            await redis.aclose()
            await sharded.dispose()
            redis_server.stop()


async def _seed(store: ShortenerStore, count: int) -> list[str]:
    now = datetime.now(UTC)
    codes = [f"bench-{n:05d}" for n in range(count)]
    for n, code in enumerate(codes):
        link = Link(code, n + 1, f"https://example.com/{code}", now, None)
        await store.insert_link(link, "0" * 64)
    return codes


async def _measure(
    name: str,
    resolve: Callable[[str], Awaitable[str]],
    codes: list[str],
    params: Parameters,
    rng: random.Random,
) -> Sample:
    progress(f"shortener: resolve from {name}")
    for code in codes:  # every tier starts warm: each code read once
        await resolve(code)
    return await closed_loop(
        lambda: resolve(rng.choice(codes)),
        concurrency=params.concurrency,
        warmup_seconds=params.warmup_seconds,
        duration_seconds=params.duration_seconds,
    )


async def _tiers(
    redis: aioredis.Redis, store: CountingStore, params: Parameters
) -> dict[str, Sample]:
    codes = await _seed(store, params.links)
    rng = random.Random(7)
    near = _policy(near_ttl_seconds=3600.0, near_max_entries=params.links)
    services = {
        "near cache": LinkService(store, Ids(), cache=Cache(redis, prefix="b:near", policy=near)),
        "Redis": LinkService(store, Ids(), cache=Cache(redis, prefix="b:redis", policy=_policy())),
        "database": LinkService(store, Ids()),
    }
    samples = {
        name: await _measure(name, service.resolve, codes, params, rng)
        for name, service in services.items()
    }
    queue = WorkQueue(redis, prefix="b")
    near_cached = services["near cache"]

    async def resolve_and_count(code: str) -> str:
        # What ClickPublisher sends for each Resolve, awaited here so that the row
        # shows what counting a click costs.
        url = await near_cached.resolve(code)
        click = Click(code, 1, datetime.now(UTC))
        await queue.publish(CLICK_STREAM, click.payload(), priority=Priority.LOW)
        return url

    samples["near cache + click publish"] = await _measure(
        "near cache, publishing clicks", resolve_and_count, codes, params, rng
    )
    return samples


async def _naive_resolve(
    redis: aioredis.Redis, store: ShortenerStore, code: str, ttl: float
) -> str:
    """Plain cache-aside: GET; on a miss, SELECT and SET. What every tutorial shows."""
    key = f"b:naive:{code}"
    raw = await redis.get(key)
    if raw is not None:
        return str(json.loads(raw)["url"])
    link = await store.find_link(code)
    assert link is not None
    await redis.set(key, json.dumps({"url": link.url}), px=int(ttl * 1000))
    return link.url


async def _reads_per_expiry(
    store: CountingStore,
    resolvers: list[Callable[[], Awaitable[str]]],
    params: Parameters,
) -> list[int]:
    reads = []
    for _ in range(params.expiries):
        await resolvers[0]()  # filled
        await asyncio.sleep(params.stampede_ttl_seconds + 0.1)  # and expired
        before = store.link_reads
        await asyncio.gather(*(resolvers[n % len(resolvers)]() for n in range(params.callers)))
        reads.append(store.link_reads - before)
    return reads


async def _stampede(
    redis: aioredis.Redis, store: CountingStore, params: Parameters
) -> dict[str, list[int]]:
    ttl = params.stampede_ttl_seconds
    hot = "bench-00000"
    progress(f"shortener: stampede, {params.callers} callers, {params.expiries} expiries")

    def naive() -> Callable[[], Awaitable[str]]:
        return lambda: _naive_resolve(redis, store, hot, ttl)

    def protected() -> Callable[[], Awaitable[str]]:
        # A client of its own per "replica": its own near cache and single flight.
        policy = _policy(ttl_seconds=ttl, near_ttl_seconds=0.0)
        links = LinkService(store, Ids(), cache=Cache(redis, prefix="b:guarded", policy=policy))
        return lambda: links.resolve(hot)

    return {
        "plain cache-aside": await _reads_per_expiry(
            store, [naive() for _ in range(params.cache_clients)], params
        ),
        "shortener cache": await _reads_per_expiry(
            store, [protected() for _ in range(params.cache_clients)], params
        ),
    }


def _report(
    samples: dict[str, Sample], stampede: dict[str, list[int]], params: Parameters, db: str
) -> dict[str, object]:
    base = samples["database"]
    rows = []
    figures: dict[str, object] = {}
    for name, sample in samples.items():
        speedup = sample.throughput / base.throughput if base.throughput else float("nan")
        tail = base.latency_ms(99) / sample.latency_ms(99) if sample.calls else float("nan")
        figures[name] = {
            **sample.summary(),
            "throughput_vs_database": round(speedup, 2),
            "p99_database_over_this": round(tail, 2),
        }
        rows.append(
            [
                name,
                f"{sample.calls:,}",
                f"{sample.throughput:,.0f}",
                f"{sample.latency_ms(50):.3f}",
                f"{sample.latency_ms(99):.3f}",
                f"{speedup:.1f}x",
                f"{tail:.1f}x",
            ]
        )
    print_table(
        f"Shortener Resolve by tier: {params.links} hot links, concurrency {params.concurrency},"
        f" {params.duration_seconds:g} s each, in-process; database: {db}",
        ["answered from", "calls", "calls/s", "p50 ms", "p99 ms", "calls/s vs db", "p99 db/this"],
        rows,
        [
            "calls/s vs db: throughput over the database row's; p99 db/this: how many times"
            " shorter the tail is.",
            "The click row adds Resolve's click publish (one XADD), awaited per call: what"
            " counting clicks costs.",
            "  The service publishes in the background, off the response path.",
        ],
    )
    stampede_rows = [
        [
            name,
            str(len(reads)),
            f"{sum(reads) / len(reads):.1f}",
            str(min(reads)),
            str(max(reads)),
        ]
        for name, reads in stampede.items()
    ]
    print_table(
        f"Stampede: database reads per expiry of one hot link, {params.callers} concurrent"
        f" callers over {params.cache_clients} cache clients",
        ["cache", "expiries", "reads/expiry", "min", "max"],
        stampede_rows,
        [
            "plain cache-aside: GET, on a miss SELECT then SET; no single flight, no lock,"
            " no early refresh.",
            "shortener cache: single flight per client, Redis lock across clients, XFetch.",
        ],
    )
    return {
        "database": db,
        "tiers": figures,
        "stampede_reads_per_expiry": stampede,
    }


async def _run(params: Parameters) -> dict[str, object]:
    async with _environment() as (redis, store, db, redis_url, database_url):
        samples = await _tiers(redis, store, params)
        stampede = await _stampede(redis, store, params)
        report = _report(samples, stampede, params, db)
        codes = [f"bench-{n:05d}" for n in range(params.links)]
        clicks = await measure_clicks(redis_url, database_url, store, codes, params.clicks)
    return {**report, "clicks": clicks}


def run(quick: bool) -> None:
    params = QUICK if quick else FULL
    figures = asyncio.run(_run(params))
    path = write_result(NAME, asdict(params), figures)
    progress(f"shortener: wrote {path}")
