"""A replica refuses to serve on a schema older than its release, and serves on a newer
one (expand/contract: the release before keeps working while the next is rolled out)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from shortener_harness import migrate_all, settings_for

from blueprint.shortener.app import SchemaNotReady, open_shortener
from support.postgres import PostgresServer, postgres_or_skip

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def pg() -> PostgresServer:
    return postgres_or_skip()


async def test_an_unmigrated_database_is_refused_with_what_to_run(
    pg: PostgresServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with pg.databases("shortener_unmigrated") as (url,):
        settings = settings_for(redis_url, redis_prefix, tmp_path, [url])
        with pytest.raises(SchemaNotReady, match="blueprint migrate shortener"):
            await open_shortener(settings, redis_url=redis_url)


async def test_a_database_a_newer_release_migrated_is_served(
    pg: PostgresServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with pg.databases("shortener_newer") as (url,):
        await migrate_all(url)
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("UPDATE alembic_version_shortener SET version_num = '9999'")
        finally:
            await connection.close()
        settings = settings_for(redis_url, redis_prefix, tmp_path, [url])
        app = await open_shortener(settings, redis_url=redis_url)
        await app.aclose()
