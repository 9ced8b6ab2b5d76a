"""Alembic migrations per service, run on every shard's writer.

Each service keeps an Alembic script directory in its package,
`services/blueprint/<service>/migrations/` (`env.py`, `script.py.mako`, `versions/`),
and its `env.py` is two lines::

    from blueprint.infra.sql.migrations import run_migrations
    run_migrations(target_metadata=Base.metadata)   # or None

`migrate(service, database)` configures Alembic in code (no alembic.ini), opens a
transaction on each writer through the async engine and hands Alembic the connection
with `run_sync`. On PostgreSQL the transaction first takes an advisory lock named after
the service, so two migrators (a deploy job and an operator, say) run one after the
other, and DDL is transactional: a failed migration leaves the shard as it was. Within
one process migrations also run one at a time (Alembic's context is process-global). Replicas
are not migrated; they replay their writer. The version table is
`alembic_version_<service>`, so services that share one database in a small setup do
not trample each other's history.

Expand/contract: every migration must leave the schema usable by the release before
it, because during a blue-green cut-over (and a rollback) both colours run against the
same database. A column rename, `links.title` to `links.name`, therefore takes two
releases:

1. Expand (release N). The migration adds `name` as a nullable column and copies
   `title` into it. The code writes both columns and reads `name`, falling back to
   `title` for rows that release N-1 (still serving) wrote meanwhile. Nothing is
   dropped, so rolling back to N-1 is safe.
2. Contract (release N+1, once no N-1 process is left). The migration copies `title`
   into `name` where `name` is still NULL, makes `name` NOT NULL, and drops `title`.
   The code uses only `name`; release N, which still wrote both, keeps working until
   it is gone, since it reads `name` first.

Never rename (or drop, or make NOT NULL) in a single step: the running release would
fail on its next query.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from blueprint.infra.sql.database import Database
from blueprint.infra.sql.shards import ShardedDatabase, shard_name
from blueprint.infra.sql.urls import check_service_name, shown

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection

    from blueprint.mesh.settings import Settings


class MigrationsNotFound(LookupError):
    """The service has no Alembic script directory where the runner looks."""


@dataclass(frozen=True, slots=True)
class ShardRevision:
    shard: str
    url: str  # password hidden
    revision: str | None


def script_directory(service: str) -> Path:
    """`services/blueprint/<service>/migrations`, found through the installed package."""
    check_service_name(service)
    spec = importlib.util.find_spec(f"blueprint.{service}")
    if spec is None or not spec.submodule_search_locations:
        raise MigrationsNotFound(f"no service package blueprint.{service}")
    location = Path(next(iter(spec.submodule_search_locations))) / "migrations"
    if not (location / "env.py").is_file():
        raise MigrationsNotFound(
            f"service {service!r} has no migrations: expected an Alembic env.py in {location}"
        )
    return location


def version_table(service: str) -> str:
    check_service_name(service)
    return f"alembic_version_{service.replace('-', '_')}"


async def migrate(
    service: str,
    database: Database | ShardedDatabase,
    *,
    revision: str = "head",
    script_location: Path | None = None,
) -> list[ShardRevision]:
    """Upgrade every shard of `database` to `revision`; the revision each shard ends at.

    Shards go one after another, each in its own transaction: if one fails, those before
    it stay upgraded and a re-run carries on from the failed one. `script_location`
    overrides the service's own directory (tests, tools).
    """
    location = script_location if script_location is not None else script_directory(service)
    table = version_table(service)
    results = []
    for name, shard in _shards(database):
        async with _alembic_lock(), shard.writer.begin() as connection:
            await connection.run_sync(_upgrade, service, location, table, revision)
        results.append(
            ShardRevision(name, shown(shard.writer.url), await current_revision(service, shard))
        )
    return results


async def migrate_from_settings(
    settings: Settings, service: str, *, revision: str = "head"
) -> list[ShardRevision]:
    """`migrate` on the databases settings give the service (what `blueprint migrate` runs)."""
    script_directory(service)  # a service without migrations fails before any connection
    database = ShardedDatabase.from_settings(settings, service)
    try:
        return await migrate(service, database, revision=revision)
    finally:
        await database.dispose()


def has_migrations(service: str) -> bool:
    """Whether `service` keeps Alembic migrations (`blueprint up` migrates those)."""
    try:
        script_directory(service)
    except MigrationsNotFound:
        return False
    return True


async def current_revision(service: str, database: Database) -> str | None:
    """The revision the writer of `database` is at for `service`; None before any."""
    table = version_table(service)
    async with database.writer.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(
                sync, opts={"version_table": table}
            ).get_current_revision()
        )


def run_migrations(target_metadata: MetaData | None = None) -> None:
    """The body of a service's `migrations/env.py`, for connections `migrate` hands over."""
    from alembic import context

    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "these migrations run through `blueprint migrate SERVICE` "
            "(blueprint.infra.sql.migrations.migrate), which supplies the connection"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=context.config.attributes["version_table"],
        # SQLite alters tables only by copying them; batch mode writes that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _shards(database: Database | ShardedDatabase) -> Sequence[tuple[str, Database]]:
    if isinstance(database, ShardedDatabase):
        return [(shard_name(i), shard) for i, shard in enumerate(database.shards)]
    return [(shard_name(0), database)]


def _upgrade(connection: Connection, service: str, location: Path, table: str, rev: str) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction ends: concurrent migrators of a service queue here.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(service)})
    config = Config()
    config.set_main_option("script_location", str(location))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = table
    command.upgrade(config, rev)


def _alembic_lock() -> asyncio.Lock:
    # Alembic keeps the running migration's context in module globals, and run_sync
    # lets another task in at every database round trip: one migration per process
    # at a time, or two would overwrite each other's context.
    loop = asyncio.get_running_loop()
    lock = _ALEMBIC_LOCKS.get(loop)
    if lock is None:
        lock = _ALEMBIC_LOCKS[loop] = asyncio.Lock()
    return lock


_ALEMBIC_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _lock_key(service: str) -> int:
    digest = hashlib.blake2b(f"blueprint-migrate:{service}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
