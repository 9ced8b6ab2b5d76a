"""One SQLAlchemy asyncio engine per database URL, pooled and timed out as settings say."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from blueprint.infra.sql.urls import is_sqlite, is_sqlite_memory, normalise_url

if TYPE_CHECKING:
    from blueprint.mesh.settings import Settings


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Pool and timeouts of every engine a `Database` opens.

    pool_min / pool_max follow the guide's connection pool (min 5, max 20). SQLAlchemy's
    queue pool keeps up to `pool_min` connections open for reuse and lets `pool_max -
    pool_min` more exist under load (its pool_size and max_overflow); it opens them on
    demand rather than all at start, so an idle replica costs no connections.
    """

    pool_min: int = 5
    pool_max: int = 20
    pool_timeout_seconds: float = 10.0
    pool_recycle_seconds: float = 1800.0
    connect_timeout_seconds: float = 5.0
    command_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.pool_min <= self.pool_max:
            raise ValueError(
                f"pool sizes need 1 <= min <= max (BLUEPRINT_DATABASE_POOL_MIN / _MAX), "
                f"got min={self.pool_min}, max={self.pool_max}"
            )
        for name in (
            "pool_timeout_seconds",
            "pool_recycle_seconds",
            "connect_timeout_seconds",
            "command_timeout_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineOptions:
        return cls(
            pool_min=settings.database_pool_min,
            pool_max=settings.database_pool_max,
            pool_timeout_seconds=settings.database_pool_timeout_seconds,
            pool_recycle_seconds=settings.database_pool_recycle_seconds,
            connect_timeout_seconds=settings.database_connect_timeout_seconds,
            command_timeout_seconds=settings.database_command_timeout_seconds,
        )


def create_engine(url: str | URL, options: EngineOptions | None = None) -> AsyncEngine:
    """An asyncio engine for `url` (normalised to asyncpg or aiosqlite)."""
    options = options or EngineOptions()
    target = normalise_url(url)
    if is_sqlite(target):
        return _sqlite_engine(target, options)
    # Looked up on the module at each call: OpenTelemetry's SQLAlchemy instrumentation
    # (mesh.telemetry) wraps it there, and must see engines made after it started.
    return sa_asyncio.create_async_engine(
        target,
        pool_size=options.pool_min,
        max_overflow=options.pool_max - options.pool_min,
        pool_timeout=options.pool_timeout_seconds,
        pool_recycle=options.pool_recycle_seconds,
        # A connection the server or a proxy closed while pooled is replaced, not handed out.
        pool_pre_ping=True,
        connect_args={
            "timeout": options.connect_timeout_seconds,
            "command_timeout": options.command_timeout_seconds,
        },
    )


def _sqlite_engine(url: URL, options: EngineOptions) -> AsyncEngine:
    kwargs: dict[str, Any] = {
        # sqlite3's timeout is how long a writer waits for another's lock (busy timeout).
        "connect_args": {"timeout": options.command_timeout_seconds},
    }
    if not is_sqlite_memory(url):
        # A file database gets the same queue pool; an in-memory one is one shared
        # connection (SQLAlchemy's StaticPool), where pool sizes mean nothing.
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs |= {
            "pool_size": options.pool_min,
            "max_overflow": options.pool_max - options.pool_min,
            "pool_timeout": options.pool_timeout_seconds,
            "pool_pre_ping": True,
        }
    engine = sa_asyncio.create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
