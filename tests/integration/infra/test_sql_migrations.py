"""Alembic migrations per service: on every shard, concurrently safe, by API and by CLI.

The service here is a stand-in, "example", whose Alembic directory is
`migrations_example/` beside this file (0001 creates `items`, 0002 is the expand half of
renaming `items.title` to `items.name`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.util import CommandError

from blueprint.infra.sql import (
    Database,
    MigrationsNotFound,
    ShardedDatabase,
    current_revision,
    has_migrations,
    migrate,
    migrate_command,
    migrations,
)
from blueprint.mesh.settings import Settings
from support.postgres import PostgresServer, postgres_or_skip

EXAMPLE = Path(__file__).parent / "migrations_example"


@pytest.fixture(scope="module")
def pg() -> PostgresServer:
    return postgres_or_skip()


@pytest.fixture(scope="module")
def shard_urls(pg: PostgresServer) -> Iterator[list[str]]:
    with pg.databases("migrations", 3) as urls:
        yield urls


async def _columns(database: Database, table: str) -> list[str]:
    async with database.writer.connect() as connection:
        return await connection.run_sync(
            lambda sync: [c["name"] for c in sa.inspect(sync).get_columns(table)]
        )


async def test_migrations_run_on_every_shard_and_again_as_a_no_op(shard_urls: list[str]) -> None:
    sharded = ShardedDatabase.from_settings(Settings(database_shard_urls=shard_urls), "example")
    try:
        first = await migrate("example", sharded, revision="0001", script_location=EXAMPLE)
        assert [(r.shard, r.revision) for r in first] == [
            ("shard-0", "0001"),
            ("shard-1", "0001"),
            ("shard-2", "0001"),
        ]
        assert all("@" in r.url and "bptest_migrations" in r.url for r in first)
        # Two migrators at once (a deploy job and an operator): the advisory lock queues them.
        again = ShardedDatabase.from_settings(Settings(database_shard_urls=shard_urls), "example")
        try:
            both = await asyncio.gather(
                migrate("example", sharded, script_location=EXAMPLE),
                migrate("example", again, script_location=EXAMPLE),
            )
        finally:
            await again.dispose()
        assert [[r.revision for r in run] for run in both] == [["0002"] * 3, ["0002"] * 3]
        for shard in sharded.shards:
            assert await _columns(shard, "items") == ["id", "key", "title", "name"]
            assert await current_revision("example", shard) == "0002"
        rerun = await migrate("example", sharded, script_location=EXAMPLE)
        assert {r.revision for r in rerun} == {"0002"}
    finally:
        await sharded.dispose()


async def test_a_migrator_waits_for_another_process_holding_the_services_lock(
    pg: PostgresServer,
) -> None:
    with pg.databases("lock") as (url,):
        database = Database.from_urls(url)
        other_process = await asyncpg.connect(url)
        try:
            await migrate("example", database, revision="0001", script_location=EXAMPLE)
            await other_process.execute(
                "SELECT pg_advisory_lock($1)", migrations._lock_key("example")
            )
            running = asyncio.create_task(migrate("example", database, script_location=EXAMPLE))
            await asyncio.sleep(0.3)
            assert not running.done()  # queued behind the lock, nothing applied yet
            assert (
                await other_process.fetchval("SELECT version_num FROM alembic_version_example")
                == "0001"
            )
            await other_process.execute("SELECT pg_advisory_unlock_all()")
            [result] = await asyncio.wait_for(running, 10)
            assert result.revision == "0002"
        finally:
            await other_process.close()
            await database.dispose()


async def test_the_expand_step_keeps_rows_readable_by_both_releases(
    pg: PostgresServer,
) -> None:
    with pg.databases("expand") as (url,):
        database = Database.from_urls(url)
        try:
            await migrate("example", database, revision="0001", script_location=EXAMPLE)
            async with database.write() as session:  # release N-1 writes title only
                await session.execute(
                    sa.text("INSERT INTO items (id, key, title) VALUES (1, 'k', 'old')")
                )
            await migrate("example", database, script_location=EXAMPLE)
            async with database.read() as session:
                row = (await session.execute(sa.text("SELECT title, name FROM items"))).one()
            assert tuple(row) == ("old", "old")  # copied into the new column, old one kept
        finally:
            await database.dispose()


async def test_with_no_url_migrations_run_on_the_sqlite_file_in_the_state_dir(
    tmp_path: Path,
) -> None:
    sharded = ShardedDatabase.from_settings(Settings(state_dir=tmp_path), "example")
    try:
        [result] = await migrate("example", sharded, script_location=EXAMPLE)
        assert result.revision == "0002"
        assert (tmp_path / "example.db").is_file()
        shard = sharded.for_key("anything")
        async with shard.write() as session:
            await session.execute(
                sa.text("INSERT INTO items (id, key, title, name) VALUES (1, 'k', 't', 'n')")
            )
        async with shard.read() as session:
            assert await session.scalar(sa.text("SELECT name FROM items")) == "n"
        assert await _columns(shard, "alembic_version_example") == ["version_num"]
    finally:
        await sharded.dispose()


async def test_an_unknown_revision_is_refused(tmp_path: Path) -> None:
    database = Database.from_settings(Settings(state_dir=tmp_path), "example")
    try:
        with pytest.raises(CommandError, match="nope"):
            await migrate("example", database, revision="nope", script_location=EXAMPLE)
    finally:
        await database.dispose()


@pytest.mark.parametrize(
    ("service", "error", "message"),
    [
        ("nosuchservice", MigrationsNotFound, "no service package blueprint.nosuchservice"),
        ("mesh", MigrationsNotFound, "has no migrations"),
        ("../mesh", ValueError, "service name"),
    ],
)
async def test_a_service_without_migrations_is_refused(
    tmp_path: Path, service: str, error: type[Exception], message: str
) -> None:
    database = Database.from_urls(f"sqlite:///{tmp_path}/x.db")
    try:
        with pytest.raises(error, match=message):
            await migrate(service, database)
    finally:
        await database.dispose()


def test_only_services_with_an_alembic_directory_have_migrations() -> None:
    assert not has_migrations("mesh")
    assert not has_migrations("nosuchservice")


# `blueprint migrate NAME`, through the parser the command registers.


def _cli(argv: list[str]) -> int:
    root = argparse.ArgumentParser(prog="blueprint")
    migrate_command.register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(argv)
    code: int = args.run(args)
    return code


@pytest.fixture
def example_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(migrations, "script_directory", lambda service: EXAMPLE)
    monkeypatch.setenv("BLUEPRINT_STATE_DIR", str(tmp_path))
    for name in ("BLUEPRINT_DATABASE_URL", "BLUEPRINT_DATABASE_SHARD_URLS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_command_migrates_and_says_where(
    example_service: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(["migrate", "example"]) == 0
    out = capsys.readouterr().out
    assert f"example shard-0 sqlite+aiosqlite:///{example_service}/example.db: at 0002" in out
    assert _cli(["migrate", "example", "--revision", "0001"]) == 0  # already past: no-op


def test_the_command_migrates_every_postgres_shard(
    example_service: Path,
    shard_urls: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BLUEPRINT_DATABASE_SHARD_URLS", str(shard_urls).replace("'", '"'))
    assert _cli(["migrate", "example"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["shard-0", "shard-1", "shard-2"]
    assert all(line.endswith("at 0002") for line in lines)


@pytest.mark.parametrize(
    ("argv", "env", "code", "message"),
    [
        (["migrate", "nosuchservice"], {}, 2, "no service package"),
        (["migrate", "Bad/Name"], {}, 2, "service name"),
        (["migrate", "example"], {"BLUEPRINT_DATABASE_URL": "mysql://x/y"}, 2, "'mysql'"),
        (["migrate", "example", "--revision", "nope"], {}, 2, "nope"),
        (
            ["migrate", "example"],
            {"BLUEPRINT_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"},
            1,
            "database unreachable",
        ),
    ],
)
def test_the_command_refuses_bad_input_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    code: int,
    message: str,
) -> None:
    monkeypatch.setenv("BLUEPRINT_STATE_DIR", str(tmp_path))
    real = migrations.script_directory
    monkeypatch.setattr(
        migrations,
        "script_directory",
        lambda service: EXAMPLE if service == "example" else real(service),
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _cli(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("blueprint migrate: ") and message in err
    assert "Traceback" not in err
