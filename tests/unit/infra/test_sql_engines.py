"""Engines from settings: pool sizes, timeouts, and the SQLite default."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool, StaticPool

from blueprint.infra.sql import Database, EngineOptions, create_engine
from blueprint.mesh.settings import Settings


def _pool(engine: object) -> QueuePool:
    pool = engine.sync_engine.pool  # type: ignore[attr-defined]
    assert isinstance(pool, QueuePool)
    return pool


async def test_the_guides_pool_min_5_max_20_becomes_5_kept_plus_15_overflow() -> None:
    engine = create_engine("postgresql://u@db.invalid/links", EngineOptions())
    pool = _pool(engine)
    assert (pool.size(), pool._max_overflow, pool.timeout()) == (5, 15, 10.0)
    assert pool._pre_ping is True
    assert pool._recycle == 1800.0
    assert engine.url.drivername == "postgresql+asyncpg"
    await engine.dispose()


async def test_pool_settings_come_from_blueprint_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLUEPRINT_DATABASE_URL", "postgresql://u@db.invalid/links")
    monkeypatch.setenv("BLUEPRINT_DATABASE_REPLICA_URLS", '["postgresql://u@r1.invalid/links"]')
    monkeypatch.setenv("BLUEPRINT_DATABASE_POOL_MIN", "2")
    monkeypatch.setenv("BLUEPRINT_DATABASE_POOL_MAX", "9")
    monkeypatch.setenv("BLUEPRINT_DATABASE_POOL_TIMEOUT_SECONDS", "3")
    database = Database.from_settings(Settings(), "shortener")
    for engine in (database.writer, *database.replicas):
        pool = _pool(engine)
        assert (pool.size(), pool._max_overflow, pool.timeout()) == (2, 7, 3.0)
    assert len(database.replicas) == 1
    await database.dispose()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pool_min": 10, "pool_max": 5}, "min <= max"),
        ({"pool_min": 0}, "min <= max"),
        ({"pool_timeout_seconds": 0}, "pool_timeout_seconds must be > 0"),
        ({"connect_timeout_seconds": -1}, "connect_timeout_seconds must be > 0"),
    ],
)
def test_bad_pool_options_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineOptions(**changes)  # type: ignore[arg-type]


def test_pool_min_above_max_in_settings_is_refused_naming_the_variables() -> None:
    settings = Settings(database_pool_min=30, database_pool_max=20)
    with pytest.raises(ValueError, match="BLUEPRINT_DATABASE_POOL_MIN"):
        Database.from_settings(settings, "shortener")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BLUEPRINT_DATABASE_POOL_MIN", "0"),
        ("BLUEPRINT_DATABASE_POOL_MAX", "-3"),
        ("BLUEPRINT_READ_YOUR_WRITES_SECONDS", "-1"),
        ("BLUEPRINT_DATABASE_REPLICA_URLS", "postgresql://not-json"),
        ("BLUEPRINT_DATABASE_SHARD_REPLICA_URLS", '["flat", "list"]'),
        ("BLUEPRINT_IDS_LEASE_SECONDS", "0.1"),
    ],
)
def test_bad_data_settings_fail_fast(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):  # pydantic's ValidationError, or SettingsError for JSON
        Settings()


async def test_with_no_url_a_service_gets_a_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    database = Database.from_settings(settings, "shortener")
    try:
        assert database.writer.url.drivername == "sqlite+aiosqlite"
        assert database.replicas == ()
        async with database.write() as session:
            await session.execute(text("CREATE TABLE t (x INTEGER)"))
            await session.execute(text("INSERT INTO t VALUES (1)"))
        async with database.read() as session:
            assert (await session.execute(text("SELECT x FROM t"))).scalar_one() == 1
            mode = (await session.execute(text("PRAGMA journal_mode"))).scalar_one()
            assert mode == "wal"
        assert (tmp_path / "state" / "shortener.db").is_file()
        assert _pool(database.writer).size() == 5
    finally:
        await database.dispose()


async def test_in_memory_sqlite_works_without_pool_sizes() -> None:
    engine = create_engine("sqlite://")
    assert isinstance(engine.sync_engine.pool, StaticPool)
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    await engine.dispose()


def test_replicas_without_a_writer_are_refused() -> None:
    settings = Settings(database_replica_urls=["postgresql://u@r.invalid/links"])
    with pytest.raises(ValueError, match="needs BLUEPRINT_DATABASE_URL"):
        Database.from_settings(settings, "shortener")


def test_one_bad_replica_url_fails_the_whole_database() -> None:
    with pytest.raises(ValueError, match="unsupported scheme 'mysql'"):
        Database.from_urls("postgresql://u@db/links", ["postgresql://u@r/links", "mysql://r/x"])
