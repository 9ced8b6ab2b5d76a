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

Names are imported when first used (PEP 562 `__getattr__`), so `blueprint migrate`'s
command-line registration, and `blueprint --help`, do not load SQLAlchemy or Alembic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULES = {
    "WRITER": "database",
    "Database": "database",
    "EngineOptions": "engines",
    "create_engine": "engines",
    "MigrationsNotFound": "migrations",
    "ShardRevision": "migrations",
    "current_revision": "migrations",
    "has_migrations": "migrations",
    "migrate": "migrations",
    "migrate_from_settings": "migrations",
    "run_migrations": "migrations",
    "caller_scope": "routing",
    "current_caller": "routing",
    "ShardedDatabase": "shards",
    "DatabaseUrlError": "urls",
    "normalise_url": "urls",
    "sqlite_url": "urls",
}

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


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
