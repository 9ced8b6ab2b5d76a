"""A database that fails under the shortener answers UNAVAILABLE, never INTERNAL, and
never holds a caller past its deadline. Real PostgreSQL behind a TCP proxy on loopback
(`support.tcp_proxy`) that the test cuts (every connection reset, as when a proxy or
server is killed) or blackholes (connections accepted, nothing ever answered); and
SQLite with its file locked by another writer.

Calls go through a plain gRPC stub, not the mesh, so every status the server sends is
seen as sent (the mesh would retry some of them away).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from shortener_harness import migrate_all, serving, settings_for

from blueprint.infra.sql import sqlite_url
from blueprint.mesh.settings import Settings
from blueprint.shortener.app import SERVICE
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.postgres import PostgresServer, postgres_or_skip
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis

CALLERS = 16
# A short open period, so recovery is seen within the test.
BREAKER = {"breaker_open_seconds": 0.5, "breaker_window": 10}


@pytest.fixture(scope="module")
def pg() -> PostgresServer:
    return postgres_or_skip()


@pytest.fixture
async def proxied(pg: PostgresServer) -> AsyncIterator[tuple[TcpProxy, str]]:
    with pg.databases("shortener_outages") as (url,):
        await migrate_all(url)
        database = url.rpartition("/")[2]
        async with TcpProxy("127.0.0.1", 5432) as proxy:
            yield proxy, f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"


@pytest.fixture
def settings(
    proxied: tuple[TcpProxy, str], redis_url: str, redis_prefix: str, tmp_path: Path
) -> Settings:
    return settings_for(redis_url, redis_prefix, tmp_path, [proxied[1]], **BREAKER)


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return list(status_pb2.Status.FromString(value).details)
    return []


def _retry_after(error: grpc.aio.AioRpcError) -> float | None:
    for detail in _details(error):
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToMilliseconds() / 1000
    return None


async def _shorten(stub: ShortenerStub, timeout: float = 10) -> pb.ShortenResponse:
    url = f"https://example.com/{uuid.uuid4().hex}"
    return await stub.Shorten(pb.ShortenRequest(url=url), timeout=timeout)


async def _load(
    calls: list[Callable[[], Awaitable[object]]], stop: asyncio.Event
) -> tuple[int, dict[grpc.StatusCode, str]]:
    """CALLERS callers, each calling the next of `calls` in turn until `stop`; how many
    were answered, and one message per status code that came instead."""
    answered, failed = 0, dict[grpc.StatusCode, str]()

    async def caller(offset: int) -> None:
        nonlocal answered
        turn = offset
        while not stop.is_set():
            try:
                await calls[turn % len(calls)]()
                answered += 1
            except grpc.aio.AioRpcError as error:
                failed.setdefault(error.code(), error.details() or "")
            turn += 1

    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    return answered, failed


async def test_a_database_cut_mid_call_answers_unavailable_never_internal(
    settings: Settings, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, _ = proxied
    async with serving(settings) as (stub, _app):
        code = (await _shorten(stub)).link.code
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: _shorten(stub),
            lambda: stub.GetStats(pb.GetStatsRequest(code=code), timeout=10),
        ]
        stop = asyncio.Event()
        load = asyncio.create_task(_load(calls, stop))
        await asyncio.sleep(0.5)  # calls in flight on every pooled connection
        proxy.cut()
        await asyncio.sleep(1.0)
        stop.set()
        answered, failed = await load
        proxy.restore()

        assert answered > 0
        assert set(failed) == {grpc.StatusCode.UNAVAILABLE}, failed
        # And it recovers once the database is back (after the breaker's open period).
        await _eventually_answers(lambda: _shorten(stub, timeout=5))


async def test_a_blackholed_database_answers_unavailable_within_the_deadline(
    settings: Settings, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, _ = proxied
    async with serving(settings) as (stub, _app):
        code = (await _shorten(stub)).link.code  # the pool holds a live connection now
        proxy.blackhole()
        outcomes = await asyncio.gather(
            _status_of(_shorten(stub, timeout=3)),
            _status_of(stub.GetStats(pb.GetStatsRequest(code=code), timeout=3)),
            return_exceptions=True,
        )
    # UNAVAILABLE comes from the server; a server still waiting at the deadline would
    # have left the caller with DEADLINE_EXCEEDED.
    assert outcomes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]


async def test_an_open_breaker_fails_fast_with_retry_info_without_touching_the_database(
    settings: Settings, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, _ = proxied
    async with serving(settings) as (stub, app):
        await _shorten(stub)
        proxy.cut()
        writer = app.store.database.shards[0].writer_guard
        while writer.allows():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await _shorten(stub, timeout=5)
        touched_before = proxy.accepted
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _shorten(stub, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit breaker open" in (refused.value.details() or "")
        retry_after = _retry_after(refused.value)
        assert retry_after is not None and 0 < retry_after <= BREAKER["breaker_open_seconds"]
        assert proxy.accepted == touched_before  # not even a connection attempt


async def test_a_locked_sqlite_database_answers_unavailable_within_the_deadline(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(redis_url, redis_prefix, tmp_path, [], **BREAKER)
    url = sqlite_url(settings.state_dir, SERVICE)
    await migrate_all(str(url))
    async with serving(settings) as (stub, _app):
        await _shorten(stub)
        holder = sqlite3.connect(str(url.database), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process's write, never committed
            with pytest.raises(grpc.aio.AioRpcError) as locked:
                await _shorten(stub, timeout=2)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert locked.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database is locked" in (locked.value.details() or "")
        await _eventually_answers(lambda: _shorten(stub, timeout=5))


async def _status_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _eventually_answers(call: Callable[[], Awaitable[object]]) -> None:
    """Once the database is back, calls succeed again within the breaker's open period
    and a probe; tried every 0.2 s for a generous bound."""
    for _ in range(75):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call()
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the shortener did not answer again within 15 s")
