"""Read-after-write and replicas, through the shortener, on real PostgreSQL and Redis.

Two shards. Shard 0 has a writer and two replicas, shard 1 a writer and one; each
replica is a database of its own on the machine's PostgreSQL, fed by a delayed copier
(`support.postgres.DelayedCopier`: it polls the writer's `links` table and inserts each
new row into the replica a second after it first saw it), so replicas lag every commit
by at least a second, as asynchronous replication under load does. Replication is not
under test; the shortener's routing of reads is.

The cache would answer these reads before the database does (Shorten writes the new
link through to it), so `uncached` forgets the code in Redis and in the near cache
before each call: what is left is the path through the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from shortener_harness import Reads, alias_on_shard, as_caller, migrate_all, serving, settings_for

from blueprint.mesh.settings import Settings
from blueprint.shortener.app import Shortener
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.postgres import DelayedCopier, PostgresServer, postgres_or_skip

pytestmark = pytest.mark.redis

LAG_SECONDS = 1.0


@pytest.fixture(scope="module")
def pg() -> PostgresServer:
    return postgres_or_skip()


@pytest.fixture(scope="module")
def databases(pg: PostgresServer) -> Iterator[dict[str, str]]:
    names = ["w0", "r0a", "r0b", "w1", "r1"]
    with pg.databases("shortener_replicas", len(names)) as urls:
        yield dict(zip(names, urls, strict=True))


@pytest.fixture
async def copiers(databases: dict[str, str]) -> AsyncIterator[dict[str, DelayedCopier]]:
    await migrate_all(*databases.values())
    pairs = {"r0a": "w0", "r0b": "w0", "r1": "w1"}
    async with contextlib.AsyncExitStack() as stack:
        yield {
            replica: await stack.enter_async_context(
                DelayedCopier(
                    databases[writer],
                    databases[replica],
                    ["links"],
                    key="code",
                    delay_seconds=LAG_SECONDS,
                )
            )
            for replica, writer in pairs.items()
        }


@pytest.fixture
def settings(
    databases: dict[str, str], redis_url: str, redis_prefix: str, tmp_path: Path
) -> Settings:
    return settings_for(
        redis_url,
        redis_prefix,
        tmp_path,
        [databases["w0"], databases["w1"]],
        [[databases["r0a"], databases["r0b"]], [databases["r1"]]],
        read_your_writes_seconds=30,
    )


async def uncached(
    stub: ShortenerStub, app: Shortener, code: str, caller: str
) -> str | grpc.StatusCode:
    await app.cache.invalidate(code)
    try:
        reply = await stub.Resolve(pb.ResolveRequest(code=code), metadata=as_caller(caller))
    except grpc.aio.AioRpcError as error:
        return error.code()
    return reply.url


async def test_the_creator_reads_its_link_at_once_others_once_the_replicas_have_it(
    copiers: dict[str, DelayedCopier], settings: Settings
) -> None:
    reads = Reads()
    async with serving(settings, reads) as (stub, app):
        alias = alias_on_shard(app.store.database, 0, "raw")
        url = "https://example.com/read-your-writes"
        await stub.Shorten(
            pb.ShortenRequest(url=url, custom_alias=alias), metadata=as_caller("alice")
        )

        # Through the cache, as every Resolve goes: the write-through answers anyone.
        for caller in ("alice", "bob"):
            reply = await stub.Resolve(pb.ResolveRequest(code=alias), metadata=as_caller(caller))
            assert reply.url == url
        assert reads.seen == []

        # Through the store: Alice, who just wrote, reads the writer and finds it.
        assert await uncached(stub, app, alias, "alice") == url
        assert reads.routes() == [("shard-0", "writer")]

        # Bob reads a replica, which has not got it yet.
        reads.clear()
        assert await uncached(stub, app, alias, "bob") == grpc.StatusCode.NOT_FOUND
        assert reads.routes()[0][1].startswith("replica-")

        await copiers["r0a"].copied(("links", alias))
        await copiers["r0b"].copied(("links", alias))
        reads.clear()
        assert await uncached(stub, app, alias, "bob") == url
        assert await uncached(stub, app, alias, "bob") == url
        # Replicas are taken in turn: both served the link.
        assert sorted(reads.routes()) == [("shard-0", "replica-0"), ("shard-0", "replica-1")]


async def test_a_link_on_either_shard_is_found_through_any_replica_of_any_service_replica(
    copiers: dict[str, DelayedCopier], settings: Settings
) -> None:
    url = "https://example.com/sharded"
    async with serving(settings) as (writer_stub, writer_app):
        database = writer_app.store.database
        codes = [alias_on_shard(database, shard, "any") for shard in (0, 1)]
        for code in codes:
            await writer_stub.Shorten(
                pb.ShortenRequest(url=url, custom_alias=code), metadata=as_caller("alice")
            )
        assert [database.index_for_key(code) for code in codes] == [0, 1]
        for replica in copiers:
            code = codes[0] if replica.startswith("r0") else codes[1]
            await copiers[replica].copied(("links", code))

    # Two more replicas of the service, which never wrote anything: every read they make
    # goes to a database replica of the link's shard.
    for _ in range(2):
        reads = Reads()
        async with serving(settings, reads) as (stub, app):
            for code in codes:
                for _ in range(2):
                    assert await uncached(stub, app, code, "carol") == url
        assert sorted(reads.routes()) == [
            ("shard-0", "replica-0"),
            ("shard-0", "replica-1"),
            ("shard-1", "replica-0"),
            ("shard-1", "replica-0"),
        ]
