"""500 concurrent Resolves of a hot link whose cache entry just expired: one database read.

Two replicas of the service (two apps, each with its own gRPC server, near cache and
single flight) share one Redis and one PostgreSQL; the calls are split between them. In
each process single flight folds its callers into one load, and the Redis lock lets one
process load while the other waits for the value: one read in all. The count comes
from the store itself (every read it makes is reported to `Reads`).

Expiry is driven by a fake clock both replicas share, not by sleeping past a short TTL:
on a loaded machine 500 calls can take longer than any TTL short enough to wait out,
and the entry would expire again in the middle of the burst.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from shortener_harness import Reads, migrate_all, serving, settings_for

from blueprint.mesh.settings import Settings
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.clock import FakeClock
from support.postgres import PostgresServer, postgres_or_skip

pytestmark = pytest.mark.redis

CALLERS = 500
# Long in Redis's own (real) time, so only the fake clock ends an entry's life.
CACHE_TTL = 300.0


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    pg: PostgresServer = postgres_or_skip()
    with pg.databases("shortener_stampede") as (url,):
        yield url


@pytest.fixture
async def settings(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Settings:
    await migrate_all(database_url)
    return settings_for(
        redis_url,
        redis_prefix,
        tmp_path,
        [database_url],
        cache_ttl_seconds=CACHE_TTL,
        cache_ttl_jitter=0,
        database_pool_max=20,
    )


async def resolve_all(stubs: list[ShortenerStub], code: str) -> Counter[str]:
    async def one(n: int) -> str:
        try:
            reply = await stubs[n % len(stubs)].Resolve(pb.ResolveRequest(code=code), timeout=30)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return reply.url

    return Counter(await asyncio.gather(*(one(n) for n in range(CALLERS))))


async def test_a_just_expired_hot_link_is_read_from_the_database_once(settings: Settings) -> None:
    reads = Reads()
    clock = FakeClock()
    url = "https://example.com/hot"
    async with (
        serving(settings, reads, clock) as (one, app),
        serving(settings, reads, clock) as (other, _),
    ):
        await one.Shorten(pb.ShortenRequest(url=url, custom_alias="hot-link"))
        await app.cache.invalidate("hot-link")
        assert (await one.Resolve(pb.ResolveRequest(code="hot-link"))).url == url
        assert len(reads.seen) == 1  # the entry now cached came from the database

        clock.advance(CACHE_TTL + 1)  # the Redis entry and both near copies have expired
        reads.clear()
        answers = await resolve_all([one, other], "hot-link")

        assert answers == Counter({url: CALLERS})
        assert reads.seen == [("link", "shard-0", "writer")]

        # Hot now: the next calls are answered by the caches alone.
        reads.clear()
        assert await resolve_all([one, other], "hot-link") == Counter({url: CALLERS})
        assert reads.seen == []


async def test_500_lookups_of_an_unknown_code_read_the_database_once(settings: Settings) -> None:
    reads = Reads()
    async with serving(settings, reads) as (one, _), serving(settings, reads) as (other, _):
        answers = await resolve_all([one, other], "never-made")
        assert answers == Counter({"NOT_FOUND": CALLERS})
        # The miss is cached too (negative caching): the database is asked once.
        assert reads.seen == [("link", "shard-0", "writer")]
