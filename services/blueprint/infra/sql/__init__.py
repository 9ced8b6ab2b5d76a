"""SQL for services: asyncio engines, writer + replicas with read-your-writes, shards.

    db = ShardedDatabase.from_settings(settings, "shortener")   # or Database.from_settings
    await migrate("shortener", db)                              # every shard's writer
    shard = db.for_key(code)
    async with shard.write(caller=user_id) as session:          # one transaction, writer
        session.add(Link(...))
    async with shard.read(caller=user_id) as session:           # writer for 5 s, then replicas
        link = await session.get(Link, link_id)

SQLite (aiosqlite) under `settings.state_dir` when no URL is set; PostgreSQL (asyncpg)
from `BLUEPRINT_DATABASE_URL` and friends.
"""

from __future__ import annotations

from blueprint.infra.sql.database import WRITER, Database
from blueprint.infra.sql.engines import EngineOptions, create_engine
from blueprint.infra.sql.migrations import (
    MigrationsNotFound,
    ShardRevision,
    current_revision,
    has_migrations,
    migrate,
    migrate_from_settings,
    run_migrations,
)
from blueprint.infra.sql.routing import caller_scope, current_caller
from blueprint.infra.sql.shards import ShardedDatabase
from blueprint.infra.sql.urls import DatabaseUrlError, normalise_url, sqlite_url

__all__ = [
    "WRITER",
    "Database",
    "DatabaseUrlError",
    "EngineOptions",
    "MigrationsNotFound",
    "ShardRevision",
    "ShardedDatabase",
    "caller_scope",
    "create_engine",
    "current_caller",
    "current_revision",
    "has_migrations",
    "migrate",
    "migrate_from_settings",
    "normalise_url",
    "run_migrations",
    "sqlite_url",
]
