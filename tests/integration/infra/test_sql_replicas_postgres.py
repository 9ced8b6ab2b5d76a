"""Writer + replica on the machine's PostgreSQL: read-your-writes against real lag.

The "replica" is a second database on the same server, fed by a delayed copier (a task
in the test, `support.postgres.DelayedCopier`): it polls the writer's `items` table every
50 ms and inserts each new row into the replica one second after it first saw it, so the
replica lags every commit by at least a second, as asynchronous replication under load
would. Replication itself is not under test; the routing is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from blueprint.errors import StoreUnavailable
from blueprint.infra.sql import WRITER, Database, EngineOptions, create_engine
from support.postgres import DelayedCopier, PostgresServer, postgres_or_skip

LAG_SECONDS = 1.0

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("body", sa.Text, nullable=False),
)


@pytest.fixture(scope="module")
def pg() -> PostgresServer:
    return postgres_or_skip()


class SkewedClock:
    """time.monotonic, plus whatever the test has skipped ahead."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


async def _create_items(*engines: AsyncEngine) -> None:
    for engine in engines:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)


async def _find(database: Database, caller: str, item_id: int) -> tuple[str, str | None]:
    async with database.read(caller) as session:
        body = await session.scalar(sa.select(items.c.body).where(items.c.id == item_id))
        return session.info["route"], body


@pytest.fixture(scope="module")
def writer_and_replica(pg: PostgresServer) -> Iterator[list[str]]:
    # Shared by this module's tests, which use distinct rows; dropped after the last.
    with pg.databases("replicas", 2) as urls:
        yield urls


async def test_the_writer_sees_its_write_at_once_others_after_the_replica_catches_up(
    writer_and_replica: list[str],
) -> None:
    writer_url, replica_url = writer_and_replica
    clock = SkewedClock()
    database = Database(
        create_engine(writer_url),
        [create_engine(replica_url)],
        read_your_writes_seconds=5,
        clock=clock,
    )
    try:
        await _create_items(database.writer, *database.replicas)
        async with DelayedCopier(
            writer_url, replica_url, ["items"], delay_seconds=LAG_SECONDS
        ) as copier:
            async with database.write(caller="alice") as session:
                await session.execute(sa.insert(items).values(id=1, body="hello"))

            # Alice, inside her window, reads the writer and sees her row.
            assert await _find(database, "alice", 1) == (WRITER, "hello")
            # Bob reads the replica, which has not got it yet (the copier waits a second).
            assert await _find(database, "bob", 1) == ("replica-0", None)

            await copier.copied(("items", 1))
            assert await _find(database, "bob", 1) == ("replica-0", "hello")

            # Once her window has passed, Alice reads replicas again.
            clock.skipped += 5
            assert await _find(database, "alice", 1) == ("replica-0", "hello")
    finally:
        await database.dispose()


async def test_a_replica_that_refuses_connections_falls_back_to_the_writer(
    pg: PostgresServer, writer_and_replica: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    writer_url, _ = writer_and_replica
    # A database that does not exist: the server answers, and refuses us.
    database = Database.from_urls(writer_url, [pg.url("bptest_no_such_database")])
    try:
        await _create_items(database.writer)
        async with database.write() as session:
            await session.execute(sa.insert(items).values(id=7, body="kept"))
        assert await _find(database, "bob", 7) == (WRITER, "kept")
        assert "replica-0" in caplog.text and "unreachable" in caplog.text
        assert await _find(database, "bob", 7) == (WRITER, "kept")  # skipped, not retried
    finally:
        await database.dispose()


async def test_the_pool_never_opens_more_than_pool_max_connections(
    writer_and_replica: list[str],
) -> None:
    writer_url, _ = writer_and_replica
    options = EngineOptions(pool_min=2, pool_max=3, pool_timeout_seconds=0.5)
    database = Database.from_urls(writer_url, options=options)
    release = asyncio.Event()
    holding = 0

    async def hold() -> None:
        nonlocal holding
        async with database.read() as session:
            await session.execute(sa.text("SELECT 1"))
            holding += 1
            await release.wait()

    try:
        holders = [asyncio.create_task(hold()) for _ in range(3)]
        for _ in range(500):
            if holding == 3:
                break
            await asyncio.sleep(0.01)
        # A fourth reader waits pool_timeout_seconds for a connection, then fails, as a
        # store that does not answer (UNAVAILABLE at the edge).
        with pytest.raises(StoreUnavailable) as failed:
            async with database.read() as session:
                await session.execute(sa.text("SELECT 1"))
        assert isinstance(failed.value.__cause__, sa.exc.TimeoutError)
        release.set()
        await asyncio.gather(*holders)
        async with database.read() as session:
            opened = await session.scalar(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            )
        assert opened is not None and opened <= 3
    finally:
        await database.dispose()


async def test_a_statement_over_the_command_timeout_is_cancelled(
    writer_and_replica: list[str],
) -> None:
    writer_url, _ = writer_and_replica
    database = Database.from_urls(writer_url, options=EngineOptions(command_timeout_seconds=0.3))
    try:
        with pytest.raises(StoreUnavailable, match="no answer within"):
            async with database.read() as session:
                await session.execute(sa.text("SELECT pg_sleep(5)"))
        async with database.read() as session:  # and the pool still serves
            assert await session.scalar(sa.text("SELECT 1")) == 1
    finally:
        await database.dispose()
