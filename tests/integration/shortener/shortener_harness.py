"""The shortener in this process, served over real gRPC, on real PostgreSQL and Redis.

`serving(...)` opens the service as `blueprint serve shortener` does (`open_shortener`
from settings), puts its servicer on a `grpc.aio` server with the runtime's interceptor
(so errors become statuses exactly as in production) and hands back a stub and the app.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

from blueprint.infra.sql import Database, ShardedDatabase, migrate
from blueprint.mesh.interceptors import ServerInterceptor
from blueprint.mesh.settings import Settings
from blueprint.shortener.app import SERVICE, Shortener, open_shortener
from blueprint.shortener.service import ShortenerServicer
from blueprint.shortener.v1 import shortener_pb2_grpc

CALLER_HEADER = "x-blueprint-hash-key"
TABLES = ("links", "pastes", "daily_clicks", "click_receipts")


def settings_for(
    redis_url: str,
    prefix: str,
    state_dir: Path,
    shard_urls: Sequence[str],
    replica_urls: Sequence[Sequence[str]] = (),
    **extra: Any,
) -> Settings:
    given: dict[str, Any] = {
        "database_pool_min": 1,
        "database_pool_max": 10,
        "shortener_purge_interval_seconds": 0,
        **extra,
    }
    return Settings(
        redis_url=redis_url,
        redis_prefix=prefix,
        state_dir=state_dir,
        database_shard_urls=list(shard_urls),
        database_shard_replica_urls=[list(r) for r in replica_urls],
        **given,
    )


async def migrate_all(*urls: str) -> None:
    """Writers and replicas alike get the schema (replicas do not replay DDL here)."""
    for url in urls:
        database = Database.from_urls(url)
        try:
            await migrate(SERVICE, database)
        finally:
            await database.dispose()


@dataclass
class Reads:
    """Every database read the store made: (what, shard, route)."""

    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, what: str, shard: str, route: str) -> None:
        self.seen.append((what, shard, route))

    def routes(self) -> list[tuple[str, str]]:
        return [(shard, route) for _, shard, route in self.seen]

    def clear(self) -> None:
        self.seen.clear()


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, reads: Reads | None = None, clock: Callable[[], float] = time.time
) -> AsyncIterator[tuple[shortener_pb2_grpc.ShortenerStub, Shortener]]:
    app = await open_shortener(
        settings, redis_url=str(settings.redis_url), on_read=reads, clock=clock
    )
    server = grpc.aio.server(interceptors=[ServerInterceptor(None, None)])
    servicer = ShortenerServicer(app, caller_header=settings.hash_key_header)
    shortener_pb2_grpc.add_ShortenerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield shortener_pb2_grpc.ShortenerStub(channel), app
    finally:
        await channel.close()
        await server.stop(None)
        await app.aclose()


def as_caller(caller: str) -> list[tuple[str, str]]:
    return [(CALLER_HEADER, caller)]


def bad_request_fields(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """google.rpc.BadRequest field violations in the status details: field -> why."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    return {v.field: v.description for v in bad_request.field_violations}
    return {}


async def row_counts(database: ShardedDatabase) -> dict[str, int]:
    """Rows per table summed over every shard's writer."""
    import sqlalchemy as sa

    counts = dict.fromkeys(TABLES, 0)
    for shard in database.shards:
        async with shard.writer.connect() as connection:
            for table in TABLES:
                counts[table] += int(
                    await connection.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0
                )
    return counts


def alias_on_shard(database: ShardedDatabase, shard: int, stem: str) -> str:
    """The first `stem-N` alias that hashes to `shard`."""
    for n in range(10_000):
        alias = f"{stem}-{n}"
        if database.index_for_key(alias) == shard:
            return alias
    raise AssertionError(f"no alias found for shard {shard}")
