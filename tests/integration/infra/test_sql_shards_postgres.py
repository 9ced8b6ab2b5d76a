"""Shards on the machine's PostgreSQL: each key's rows on one shard, read via its replicas.

Three shards, each a writer database with replica databases (two for shard 0, one for
the others), every replica fed by a delayed copier (`support.postgres.DelayedCopier`: a
task polling the writer and inserting new rows into the replica 0.3 s after it first
saw them). The sharded database is built from settings, as a service builds it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa

from blueprint.infra.sql import ShardedDatabase
from blueprint.mesh.settings import Settings
from support.postgres import DelayedCopier, PostgresServer, postgres_or_skip

REPLICAS_PER_SHARD = [2, 1, 1]

metadata = sa.MetaData()
links = sa.Table(
    "links",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("code", sa.String(16), nullable=False, unique=True),
    sa.Column("url", sa.Text, nullable=False),
)


@pytest.fixture(scope="module")
def pg() -> PostgresServer:
    return postgres_or_skip()


@pytest.fixture(scope="module")
def shard_urls(pg: PostgresServer) -> Iterator[tuple[list[str], list[list[str]]]]:
    count = len(REPLICAS_PER_SHARD) + sum(REPLICAS_PER_SHARD)
    with pg.databases("shards", count) as urls:
        writers = urls[: len(REPLICAS_PER_SHARD)]
        rest = iter(urls[len(REPLICAS_PER_SHARD) :])
        replicas = [[next(rest) for _ in range(n)] for n in REPLICAS_PER_SHARD]
        yield writers, replicas


@pytest.fixture
async def sharded(
    shard_urls: tuple[list[str], list[list[str]]],
) -> AsyncIterator[ShardedDatabase]:
    writers, replicas = shard_urls
    settings = Settings(database_shard_urls=writers, database_shard_replica_urls=replicas)
    database = ShardedDatabase.from_settings(settings, "shortener")
    for shard in database.shards:
        for engine in (shard.writer, *shard.replicas):
            async with engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def test_a_row_written_by_key_is_on_its_shard_only_and_read_through_its_replicas(
    sharded: ShardedDatabase, shard_urls: tuple[list[str], list[list[str]]]
) -> None:
    writers, replicas = shard_urls
    codes = [f"code{n}" for n in range(30)]
    async with contextlib.AsyncExitStack() as stack:
        # (shard index, copier feeding one of its replicas)
        copiers = [
            (
                index,
                await stack.enter_async_context(DelayedCopier(w, r, ["links"], delay_seconds=0.3)),
            )
            for index, (w, shard_replicas) in enumerate(zip(writers, replicas, strict=True))
            for r in shard_replicas
        ]
        for n, code in enumerate(codes):
            async with sharded.for_key(code).write(caller="writer") as session:
                await session.execute(
                    sa.insert(links).values(id=n, code=code, url=f"https://example.com/{n}")
                )
        for index, copier in copiers:
            for n, code in enumerate(codes):
                if sharded.index_for_key(code) == index:
                    await copier.copied(("links", n))

        placed = {i: 0 for i in range(len(sharded))}
        for n, code in enumerate(codes):
            index = sharded.index_for_key(code)
            placed[index] += 1
            # On its shard's writer, and on no other shard.
            for other, shard in enumerate(sharded.shards):
                async with shard.write() as session:
                    found = await session.scalar(sa.select(links.c.url).where(links.c.code == code))
                assert (found is not None) == (other == index), (code, other, index)
            # Another client reads it through each of the shard's replicas in turn.
            for _ in range(len(replicas[index])):
                async with sharded.for_key(code).read(caller="reader") as session:
                    url = await session.scalar(sa.select(links.c.url).where(links.c.code == code))
                    assert session.info["route"].startswith("replica-")
                assert url == f"https://example.com/{n}"
    assert all(placed.values()), placed  # 30 keys reach all three shards


async def test_for_key_is_stable_across_instances_built_from_the_same_settings(
    sharded: ShardedDatabase, shard_urls: tuple[list[str], list[list[str]]]
) -> None:
    writers, replicas = shard_urls
    settings = Settings(database_shard_urls=writers, database_shard_replica_urls=replicas)
    again = ShardedDatabase.from_settings(settings, "shortener")
    try:
        for code in (f"k{n}" for n in range(500)):
            assert again.for_key(code).writer.url == sharded.for_key(code).writer.url
    finally:
        await again.dispose()
