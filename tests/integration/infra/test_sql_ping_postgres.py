"""The health probe of a database (`Database.ping_writer`) on the machine's PostgreSQL.

It answers on a connection of its own, so a pool busy with calls is not mistaken for an
outage; a database that does not answer (a cut TCP proxy) raises `StoreUnavailable`,
and the probe sees it come back.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from blueprint.errors import StoreUnavailable
from blueprint.infra.sql import Database, EngineOptions
from support.postgres import postgres_or_skip
from support.tcp_proxy import TcpProxy


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_or_skip().databases("ping") as (url,):
        yield url


async def test_the_probe_answers_while_every_pooled_connection_is_busy(database_url: str) -> None:
    options = EngineOptions(pool_min=1, pool_max=1, pool_timeout_seconds=0.2)
    database = Database.from_urls(database_url, options=options, name="pinged")
    try:
        async with database.writer.connect():  # the pool's one connection, held
            await database.ping_writer()
    finally:
        await database.dispose()


async def test_the_probe_fails_as_unavailable_while_cut_and_recovers(database_url: str) -> None:
    upstream = urlsplit(database_url)
    async with TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432) as proxy:
        proxied = database_url.replace(f":{upstream.port}/", f":{proxy.port}/", 1)
        database = Database.from_urls(proxied, name="pinged")
        try:
            await database.ping_writer()
            proxy.cut()
            with pytest.raises(StoreUnavailable) as raised:
                await database.ping_writer()
            assert raised.value.dependency == "pinged/writer"
            proxy.restore()
            await database.ping_writer()
        finally:
            await database.dispose()
