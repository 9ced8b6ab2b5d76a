"""The machine's PostgreSQL for tests: probed once, a database of its own per test module.

The server is shared with other test runs, so tests never touch a database they did not
create: each creates uniquely named ones (`bptest_<label>_<random>`) and drops them
afterwards, failure or not. Where no server answers, PostgreSQL tests skip with the
reason and the rest run.

    @pytest.fixture(scope="module")
    def pg() -> PostgresServer:
        return postgres_or_skip()

    def test_x(pg: PostgresServer) -> None:
        with pg.databases("links", 2) as (writer_url, replica_url): ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import re
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest

MACHINE_POSTGRES_URL = os.environ.get(
    "BLUEPRINT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
T = TypeVar("T")


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str  # a database we may connect to for CREATE/DROP DATABASE

    def url(self, database: str) -> str:
        """The libpq-style URL of `database` on this server (what operators configure)."""
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def create(self, label: str) -> str:
        """A new empty database; its name."""
        name = f"bptest_{re.sub(r'[^a-z0-9]', '_', label.lower())[:24]}_{uuid.uuid4().hex[:10]}"
        _run(self._admin(f'CREATE DATABASE "{name}"'))
        return name

    def drop(self, name: str) -> None:
        # FORCE ends connections a failed test left open (PostgreSQL 13+).
        _run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    @contextlib.contextmanager
    def databases(self, label: str, count: int = 1) -> Iterator[list[str]]:
        """`count` new databases' URLs, dropped when the block ends however it ends."""
        names: list[str] = []
        try:
            for _ in range(count):
                names.append(self.create(label))
            yield [self.url(name) for name in names]
        finally:
            for name in names:
                self.drop(name)

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.admin_url, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()


@functools.cache
def machine_postgres() -> tuple[PostgresServer | None, str]:
    """The server, or None and why not; asked once per test process."""
    server = PostgresServer(MACHINE_POSTGRES_URL)

    async def probe() -> None:
        connection = await asyncpg.connect(server.admin_url, timeout=2)
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    try:
        _run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return None, f"no PostgreSQL at {MACHINE_POSTGRES_URL} ({type(error).__name__}: {error})"
    return server, ""


def postgres_or_skip() -> PostgresServer:
    server, reason = machine_postgres()
    if server is None:
        pytest.skip(reason)
    return server


class DelayedCopier:
    """Plays asynchronous replication between two databases of the machine's server.

    A background task polls the writer's `tables` every `poll_seconds`, notes when it
    first saw each row (by primary key column `key`) and inserts it into the replica
    `delay_seconds` later, so the replica lags the writer by at least the delay. It
    copies inserts only (no updates or deletes), and talks to both databases with plain
    asyncpg, apart from the code under test. The replica needs the same tables.

        async with DelayedCopier(writer_url, replica_url, ["items"], delay_seconds=1) as c:
            ...
            await c.copied(("items", 42))      # wait until that row reached the replica
    """

    def __init__(
        self,
        writer_url: str,
        replica_url: str,
        tables: list[str],
        *,
        key: str = "id",
        delay_seconds: float = 1.0,
        poll_seconds: float = 0.05,
    ) -> None:
        self._urls = (writer_url, replica_url)
        self._tables = tables
        self._key = key
        self._delay = delay_seconds
        self._poll = poll_seconds
        self._seen: dict[tuple[str, Any], float] = {}  # (table, key) -> first seen at
        self._pending: dict[tuple[str, Any], asyncpg.Record] = {}
        self._copied: set[tuple[str, Any]] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DelayedCopier:
        writer = await asyncpg.connect(self._urls[0], timeout=5)
        replica = await asyncpg.connect(self._urls[1], timeout=5)
        self._task = asyncio.create_task(self._copy_forever(writer, replica))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def copied(self, row: tuple[str, Any], timeout: float = 10.0) -> None:
        for _ in range(int(timeout / self._poll)):
            if row in self._copied:
                return
            if self._task is not None and self._task.done():
                self._task.result()  # the copier died: say why
            await asyncio.sleep(self._poll)
        raise TimeoutError(f"row {row} not copied within {timeout} s")

    async def _copy_forever(self, writer: asyncpg.Connection, replica: asyncpg.Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = loop.time()
                for table in self._tables:
                    for record in await writer.fetch(f'SELECT * FROM "{table}"'):
                        row = (table, record[self._key])
                        if row not in self._seen:
                            self._seen[row] = now
                            self._pending[row] = record
                for row, record in list(self._pending.items()):
                    if now - self._seen[row] >= self._delay:
                        await self._insert(replica, row[0], record)
                        del self._pending[row]
                        self._copied.add(row)
                await asyncio.sleep(self._poll)
        finally:
            await writer.close()
            await replica.close()

    async def _insert(self, replica: asyncpg.Connection, table: str, record: Any) -> None:
        columns = list(record.keys())
        names = ", ".join(f'"{c}"' for c in columns)
        slots = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        await replica.execute(
            f'INSERT INTO "{table}" ({names}) VALUES ({slots}) ON CONFLICT DO NOTHING',
            *record.values(),
        )


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # On a thread of its own, so helpers work from sync fixtures and async tests alike.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
