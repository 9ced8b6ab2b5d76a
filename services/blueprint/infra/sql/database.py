"""One logical database: a writer engine, its read replicas, and the routing between them."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from blueprint.errors import StoreUnavailable
from blueprint.infra.guard import StoreGuard, StoreGuards
from blueprint.infra.outages import translated
from blueprint.infra.sql.engines import EngineOptions, create_engine
from blueprint.infra.sql.routing import Clock, ReadYourWrites, ReplicaRotation, current_caller
from blueprint.infra.sql.urls import normalise_url, shown, sqlite_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)

WRITER = "writer"
# SQLite waits for another writer's lock for this share of what the write may take, so
# it gives up with "database is locked" (UNAVAILABLE) before the write is cancelled: its
# busy handler sleeps in steps of up to 100 ms, and the wait starts after the PRAGMA.
_SQLITE_BUSY_SHARE = 0.75


class Database:
    """A writer plus read replicas, with read-after-write routing.

    `write()` is a transaction on the writer; committing it pins the caller to the
    writer for `read_your_writes_seconds`. `read()` goes to the writer for a pinned
    caller, else to the next replica in turn; a replica that does not connect is skipped
    for `replica_retry_seconds`, and with no replica left the writer serves. The caller
    is the `caller` argument, or else `current_caller` (set per request with
    `caller_scope`); a read or write with no caller is anonymous and never pinned.

    Sessions say where they went in `session.info["route"]` ("writer" or "replica-N").

    Every engine has a `StoreGuard` (dependency `<name>/writer`, `<name>/replica-N`): a
    read or write must end within the incoming call's deadline (at most
    `statement_timeout_seconds`), a database that does not answer raises
    `StoreUnavailable`, and while an engine's breaker is open it is not called: reads
    skip that replica, writes fail at once. On SQLite, each write also bounds its wait
    for another writer's lock (busy timeout) by that deadline.

    Who wrote lately is known to this process only. A caller's next request usually
    reaches another replica of the service; to keep read-your-writes across them, have
    its clients send the caller as the mesh's hash key (`consistent_hash` balancer,
    `x-blueprint-hash-key`) so a caller's calls stay on one replica.
    """

    def __init__(
        self,
        writer: AsyncEngine,
        replicas: Sequence[AsyncEngine] = (),
        *,
        read_your_writes_seconds: float = 5.0,
        replica_retry_seconds: float = 5.0,
        statement_timeout_seconds: float = 30.0,
        name: str = "db",
        clock: Clock | None = None,
        guards: StoreGuards | None = None,
    ) -> None:
        self.writer = writer
        self.replicas = tuple(replicas)
        self.name = name
        clocks = {} if clock is None else {"clock": clock}
        self._recent_writers = ReadYourWrites(read_your_writes_seconds, **clocks)
        self._rotation = ReplicaRotation(len(self.replicas), replica_retry_seconds, **clocks)
        self._sqlite = writer.dialect.name == "sqlite"
        guards = guards or StoreGuards()
        self.writer_guard, *replica_guards = (
            guards.guard(
                f"{name}/{route}",
                ceiling_seconds=statement_timeout_seconds,
                insist=not self._sqlite,
            )
            for route in [WRITER, *(f"replica-{i}" for i in range(len(self.replicas)))]
        )
        self.replica_guards = tuple(replica_guards)
        self._probe_engine: AsyncEngine | None = None  # ping_writer's, made on first use

    @classmethod
    def from_urls(
        cls,
        writer_url: str | URL,
        replica_urls: Sequence[str | URL] = (),
        *,
        options: EngineOptions | None = None,
        read_your_writes_seconds: float = 5.0,
        replica_retry_seconds: float = 5.0,
        name: str = "db",
        guards: StoreGuards | None = None,
    ) -> Database:
        # Every URL is checked before any engine exists, so a typo fails whole.
        urls = [normalise_url(writer_url), *(normalise_url(u) for u in replica_urls)]
        options = options or EngineOptions()
        engines = [create_engine(url, options) for url in urls]
        return cls(
            engines[0],
            engines[1:],
            read_your_writes_seconds=read_your_writes_seconds,
            replica_retry_seconds=replica_retry_seconds,
            statement_timeout_seconds=options.command_timeout_seconds,
            name=name,
            guards=guards,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, service: str, *, guards: StoreGuards | None = None
    ) -> Database:
        """`settings.database_url` and its replicas, or the service's SQLite file."""
        if settings.database_url is None:
            if settings.database_replica_urls:
                raise ValueError(
                    "BLUEPRINT_DATABASE_REPLICA_URLS needs BLUEPRINT_DATABASE_URL (the writer)"
                )
            writer: str | URL = sqlite_url(settings.state_dir, service)
        else:
            writer = settings.database_url
        return cls.from_urls(
            writer,
            settings.database_replica_urls,
            options=EngineOptions.from_settings(settings),
            read_your_writes_seconds=settings.read_your_writes_seconds,
            replica_retry_seconds=settings.database_replica_retry_seconds,
            name=service,
            guards=guards,
        )

    @asynccontextmanager
    async def write(self, caller: str | None = None) -> AsyncIterator[AsyncSession]:
        """A session in a transaction on the writer, committed when the block ends."""
        until = self.writer_guard.deadline()
        async with (
            self.writer_guard.call(until),
            AsyncSession(self.writer, expire_on_commit=False) as session,
        ):
            session.info["route"] = WRITER
            async with session.begin():
                if self._sqlite:
                    await _bound_sqlite_busy_wait(session, until)
                yield session
        # Only after the commit: a failed write pins no one.
        self.note_write(caller)

    @asynccontextmanager
    async def read(self, caller: str | None = None) -> AsyncIterator[AsyncSession]:
        """A session on the engine this caller should read from (see the class doc)."""
        until = self.writer_guard.deadline()
        route, guard, connection = await self._connect_for_read(caller, until)
        try:
            async with guard.attempt(until):
                async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                    session.info["route"] = route
                    yield session
                await connection.close()  # within the deadline: the pool's reset talks to it
        finally:
            if not connection.closed:  # the read failed, or had no time left to start
                await connection.close()

    def note_write(self, caller: str | None = None) -> None:
        """Pin `caller` to the writer, for writes made on `writer` without `write()`."""
        self._recent_writers.note_write(self._caller(caller))

    def read_route(self, caller: str | None = None) -> str:
        """Where a read by `caller` would go first, without connecting."""
        if self._recent_writers.pinned_to_writer(self._caller(caller)):
            return WRITER
        order = self._rotation.peek()
        return f"replica-{order[0]}" if order else WRITER

    async def ping_writer(self) -> None:
        """`SELECT 1` on the writer: the health check's probe. On a connection of its
        own (a pool busy with calls is no outage), not through the breaker (a probe must
        see the database come back while the breaker is still open); an outage is raised
        as `StoreUnavailable`, classified as every store call's is."""
        if self._probe_engine is None:
            self._probe_engine = create_engine(
                self.writer.url, EngineOptions(pool_min=1, pool_max=1, pool_timeout_seconds=5)
            )
        with translated(self.writer_guard.dependency):
            async with self._probe_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        for engine in (self.writer, *self.replicas):
            await engine.dispose()
        if self._probe_engine is not None:
            await self._probe_engine.dispose()

    def __repr__(self) -> str:
        return (
            f"Database({self.name!r}, writer={shown(self.writer.url)!r}, "
            f"replicas={[shown(e.url) for e in self.replicas]!r})"
        )

    def _caller(self, caller: str | None) -> str | None:
        return caller if caller is not None else current_caller.get()

    async def _connect_for_read(
        self, caller: str | None, until: float
    ) -> tuple[str, StoreGuard, AsyncConnection]:
        """The first replica in turn that connects, else the writer; each connect is a
        first step of its engine's guard (`read` records how the read went)."""
        if not self._recent_writers.pinned_to_writer(self._caller(caller)):
            for index in self._rotation.order():
                guard = self.replica_guards[index]
                if not guard.allows():
                    continue  # its breaker is open: not even tried
                try:
                    guard.admit()
                    async with guard.attempt(until, settle=False):
                        connection = await self.replicas[index].connect()
                except StoreUnavailable as error:
                    self._rotation.mark_down(index)
                    log.warning(
                        "database %s: replica-%d (%s) unreachable, skipped for a while: %s",
                        self.name,
                        index,
                        shown(self.replicas[index].url),
                        error,
                    )
                    continue
                return f"replica-{index}", guard, connection
        self.writer_guard.admit()
        async with self.writer_guard.attempt(until, settle=False):
            connection = await self.writer.connect()
        return WRITER, self.writer_guard, connection


async def _bound_sqlite_busy_wait(session: AsyncSession, until: float) -> None:
    # A connection-level setting, so set on every write: the last one may have lowered it.
    seconds = max(0.0, (until - time.monotonic()) * _SQLITE_BUSY_SHARE)
    await session.execute(text(f"PRAGMA busy_timeout = {int(seconds * 1000)}"))
