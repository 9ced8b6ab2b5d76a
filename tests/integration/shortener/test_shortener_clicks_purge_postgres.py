"""Clicks through the real queue into the stats, counted once each; expiry and the purge.
On the machine's PostgreSQL (two shards) and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2
from prometheus_client import CollectorRegistry
from shortener_harness import migrate_all, row_counts, serving, settings_for

from blueprint.infra.queue import (
    Consumer,
    ConsumerOptions,
    Message,
    PermanentError,
    Priority,
    QueueMetrics,
    WorkQueue,
)
from blueprint.infra.queue.registry import WorkerContext, load
from blueprint.mesh.settings import Settings
from blueprint.shortener.app import Shortener, blob_store
from blueprint.shortener.clicks import CLICK_STREAM
from blueprint.shortener.purge import PurgeLoop, purge_expired
from blueprint.shortener.records import utc_now
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from blueprint.shortener.worker import ClickCounter
from support.postgres import PostgresServer, postgres_or_skip
from support.waiting import eventually

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def shard_urls() -> Iterator[list[str]]:
    pg: PostgresServer = postgres_or_skip()
    with pg.databases("shortener_clicks", 2) as urls:
        yield urls


@pytest.fixture
async def settings(
    shard_urls: list[str], redis_url: str, redis_prefix: str, tmp_path: Path
) -> Settings:
    await migrate_all(*shard_urls)
    return settings_for(
        redis_url,
        redis_prefix,
        tmp_path,
        shard_urls,
        shortener_blob_dir=tmp_path / "blobs",
        shortener_paste_inline_max_bytes=64,
    )


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[ShortenerStub, Shortener]]:
    async with serving(settings) as served:
        yield served


async def count_clicks(settings: Settings, app: Shortener) -> int:
    """Run the registered `shortener-clicks` handler until the stream is drained."""
    await app.clicks.flush()
    redis = aioredis.Redis.from_url(str(settings.redis_url))
    try:
        queue = WorkQueue(redis, prefix=settings.redis_prefix)
        spec = load("shortener-clicks")
        await queue.ensure_group(spec.stream, spec.group)
        handled = 0
        context = WorkerContext("shortener-clicks", "test", settings, redis, queue)
        async with spec.factory(context) as handler:
            consumer = Consumer(queue, spec.stream, spec.group, "test-1", handler)
            while taken := await consumer.run_once(block_seconds=0.1):
                handled += taken
        return handled
    finally:
        await redis.aclose()


async def test_clicks_are_counted_once_each_per_day(
    service: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    stub, app = service
    await stub.Shorten(pb.ShortenRequest(url="https://example.com/c", custom_alias="counted"))
    for _ in range(3):
        await stub.Resolve(pb.ResolveRequest(code="counted"))
    for _ in range(2):  # a call and its retry: one click
        await stub.Resolve(pb.ResolveRequest(code="counted", request_id="call-7"))

    assert (await stub.GetStats(pb.GetStatsRequest(code="counted"))).total_clicks == 0
    assert await count_clicks(settings, app) == 5  # five messages; the retry's is a duplicate

    stats = await stub.GetStats(pb.GetStatsRequest(code="counted", days=1))
    today = datetime.now(UTC).date().isoformat()
    assert stats.total_clicks == 4
    assert [(d.day, d.clicks) for d in stats.daily] == [(today, 4)]


async def test_a_redelivered_click_is_not_counted_twice(
    service: tuple[ShortenerStub, Shortener],
) -> None:
    stub, app = service
    await stub.Shorten(pb.ShortenRequest(url="https://example.com/r", custom_alias="redelivered"))
    link = await app.store.find_link("redelivered")
    assert link is not None
    payload = {"code": "redelivered", "link_id": link.id, "at": utc_now().isoformat()}
    counter = ClickCounter(app.store)
    for attempt in (1, 2):  # as after a crash between the commit and the acknowledgement
        message = Message("m-1", payload, attempt, CLICK_STREAM, Priority.LOW, "1-0", 0.0)
        await counter.handle_batch([message])
    stats = await stub.GetStats(pb.GetStatsRequest(code="redelivered"))
    assert stats.total_clicks == 1


async def test_a_click_published_twice_is_counted_once_and_seen_as_a_duplicate(
    service: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    # As `blueprint work shortener-clicks` runs them: four consumers of one worker, its
    # batches, and among the clicks one message id twice and a message that is no click.
    # Whichever consumers the two entries of "c1" reach, the second is a duplicate.
    stub, app = service
    await stub.Shorten(pb.ShortenRequest(url="https://example.com/t", custom_alias="twice"))
    link = await app.store.find_link("twice")
    assert link is not None
    # Named, so that its connections blocked in XREADGROUP can be told from others'.
    redis = aioredis.Redis.from_url(str(settings.redis_url), client_name=settings.redis_prefix)
    registry = CollectorRegistry()
    metrics = QueueMetrics(registry)
    spec = load("shortener-clicks")
    stop = asyncio.Event()
    try:
        queue = WorkQueue(redis, prefix=settings.redis_prefix)
        await queue.ensure_group(spec.stream, spec.group)
        context = WorkerContext("shortener-clicks", "test", settings, redis, queue)
        async with spec.factory(context) as handler:
            options = ConsumerOptions(block_seconds=0.2)
            consumers = [
                Consumer(queue, spec.stream, spec.group, f"test-{n}", handler,
                         options=options, metrics=metrics)
                for n in range(1, 5)
            ]  # fmt: skip
            running = [asyncio.create_task(c.run(stop)) for c in consumers]

            async def blocked_readers() -> int:
                clients = await redis.client_list()
                return sum(
                    c["name"] == settings.redis_prefix and "b" in c["flags"] for c in clients
                )

            # All four idle in a blocking read, as in a worker between bursts: each entry
            # then goes to whichever consumer Redis serves first.
            for _ in range(3000):
                if await blocked_readers() == len(consumers):
                    break
                await asyncio.sleep(0.01)
            assert await blocked_readers() == len(consumers)
            click = {"code": "twice", "link_id": link.id, "at": utc_now().isoformat()}
            for n in (1, 2, 3, 1):
                await queue.publish(spec.stream, click, priority=Priority.LOW, message_id=f"c{n}")
            await queue.publish(spec.stream, {"not": "a click"}, priority=Priority.LOW)

            def outcome(name: str) -> float:
                labels = {"stream": spec.stream, "group": spec.group}
                return (
                    registry.get_sample_value(f"blueprint_queue_messages_{name}_total", labels)
                    or 0.0
                )

            await eventually(
                lambda: outcome("processed") + outcome("duplicate") + outcome("dead_lettered") >= 5,
                60,
                "every message settled",
            )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*running), 60)
        assert outcome("duplicate") == 1
        assert outcome("processed") == 3
        assert outcome("dead_lettered") == 1
        assert await queue.pending(spec.stream, spec.group) == 0
    finally:
        stop.set()
        await redis.aclose()
    assert (await stub.GetStats(pb.GetStatsRequest(code="twice"))).total_clicks == 3


async def test_clicks_of_a_deleted_link_do_not_count_for_its_successor(
    service: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    stub, app = service
    first = await stub.Shorten(pb.ShortenRequest(url="https://a.example/", custom_alias="reborn"))
    await stub.Resolve(pb.ResolveRequest(code="reborn"))
    await stub.DeleteLink(
        pb.DeleteLinkRequest(code="reborn", management_token=first.management_token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.Resolve(pb.ResolveRequest(code="reborn"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.Shorten(pb.ShortenRequest(url="https://b.example/", custom_alias="reborn"))
    await count_clicks(settings, app)
    assert (await stub.GetStats(pb.GetStatsRequest(code="reborn"))).total_clicks == 0


async def test_delete_needs_the_management_token(
    service: tuple[ShortenerStub, Shortener],
) -> None:
    stub, _ = service
    created = await stub.Shorten(pb.ShortenRequest(url="https://example.com/", custom_alias="kept"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.DeleteLink(pb.DeleteLinkRequest(code="kept", management_token="guess"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await stub.GetLink(pb.GetLinkRequest(code="kept"))).link.url == created.link.url


async def test_expired_links_answer_not_found_and_the_purge_removes_them(
    service: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    stub, app = service
    one_second = duration_pb2.Duration(seconds=1)
    await stub.Shorten(pb.ShortenRequest(url="https://example.com/", custom_alias="stays"))
    brief = await stub.Shorten(
        pb.ShortenRequest(url="https://example.com/b", custom_alias="brief", ttl=one_second)
    )
    lifetime = brief.link.expires_at.ToDatetime(UTC) - brief.link.created_at.ToDatetime(UTC)
    assert lifetime == timedelta(seconds=1)
    await stub.Resolve(pb.ResolveRequest(code="brief"))
    await count_clicks(settings, app)
    big = await stub.CreatePaste(pb.CreatePasteRequest(content="b" * 100, ttl=one_second))
    small = await stub.CreatePaste(pb.CreatePasteRequest(content="s", ttl=one_second))
    blobs = settings.shortener_blob_dir
    assert blobs is not None and (blobs / "pastes" / big.paste.code).exists()
    await asyncio.sleep(1.1)

    for call in (stub.Resolve(pb.ResolveRequest(code="brief")),
                 stub.GetLink(pb.GetLinkRequest(code="brief")),
                 stub.GetStats(pb.GetStatsRequest(code="brief")),
                 stub.GetPaste(pb.GetPasteRequest(code=big.paste.code)),
                 stub.GetPaste(pb.GetPasteRequest(code=small.paste.code))):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await call
        assert expired.value.code() == grpc.StatusCode.NOT_FOUND
        assert "expired" in (expired.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as still_held:
        await stub.Shorten(pb.ShortenRequest(url="https://example.com/", custom_alias="brief"))
    assert still_held.value.code() == grpc.StatusCode.ALREADY_EXISTS

    before = await row_counts(app.store.database)
    # The purge waits a minute past expiry (a reader may still hold the row): run it
    # as if two minutes had passed, in batches of one row.
    later = utc_now() + timedelta(minutes=2)
    report = await purge_expired(app.store, blob_store(settings), now=later, batch=1)
    assert (report.links, report.pastes, report.blobs) == (1, 2, 1)
    after = await row_counts(app.store.database)
    assert after["links"] == before["links"] - 1 and after["pastes"] == before["pastes"] - 2
    assert after["daily_clicks"] == before["daily_clicks"] - 1
    assert not (blobs / "pastes" / big.paste.code).exists()
    assert (await stub.GetLink(pb.GetLinkRequest(code="stays"))).link.code == "stays"
    # The alias is free again.
    await stub.Shorten(pb.ShortenRequest(url="https://example.com/again", custom_alias="brief"))
    assert (await stub.Resolve(pb.ResolveRequest(code="brief"))).url == "https://example.com/again"


async def test_one_replica_purges_per_interval(
    service: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    _, app = service
    redis = aioredis.Redis.from_url(str(settings.redis_url))
    try:
        loops = [
            PurgeLoop(
                app.store,
                blob_store(settings),
                redis,
                lease_key=f"{settings.redis_prefix}:shortener:purge-lease",
                owner=f"replica-{n}",
                interval_seconds=30,
                batch=100,
            )
            for n in range(3)
        ]
        reports = await asyncio.gather(*(loop.run_once() for loop in loops))
        assert sum(report is not None for report in reports) == 1
    finally:
        await redis.aclose()


async def test_pastes_round_trip_inline_and_through_the_blob_store(
    service: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    stub, app = service
    for content in ("print('hi')\n", "ü" * 1000):
        created = await stub.CreatePaste(pb.CreatePasteRequest(content=content, language="python"))
        assert created.paste.size_bytes == len(content.encode()) and not created.paste.content
        fetched = await stub.GetPaste(pb.GetPasteRequest(code=created.paste.code))
        assert fetched.paste.content == content and fetched.paste.language == "python"
        stored = await app.store.find_paste(created.paste.code)
        assert stored is not None
        assert (stored.blob_key is None) == (len(content.encode()) <= 64)


async def test_a_batch_counts_each_message_id_once_within_and_across_batches(
    service: tuple[ShortenerStub, Shortener],
) -> None:
    stub, app = service
    codes = [f"batch{n}" for n in range(6)]  # over both shards
    links = {}
    for code in codes:
        await stub.Shorten(pb.ShortenRequest(url=f"https://example.com/{code}", custom_alias=code))
        link = await app.store.find_link(code)
        assert link is not None
        links[code] = link.id
    assert len({app.store.database.index_for_key(code) for code in codes}) == 2
    at = utc_now().isoformat()

    def message(mid: str, code: str) -> Message:
        payload = {"code": code, "link_id": links[code], "at": at}
        return Message(mid, payload, 1, CLICK_STREAM, Priority.LOW, "1-0", 0.0)

    counter = ClickCounter(app.store)
    first = [message(f"m-{code}-{n}", code) for code in codes for n in range(2)]
    await counter.handle_batch([*first, first[0], first[5]])  # two ids twice in one batch
    # The next batch repeats the whole first one (a split or a takeover) and adds one.
    await counter.handle_batch([*first, message("m-new", codes[0])])
    totals = {
        code: (await stub.GetStats(pb.GetStatsRequest(code=code))).total_clicks for code in codes
    }
    assert totals == {code: 3 if code == codes[0] else 2 for code in codes}


async def test_a_batch_with_a_click_that_is_not_one_is_refused_whole(
    service: tuple[ShortenerStub, Shortener],
) -> None:
    _, app = service
    bad = Message("m-bad", {"code": "x"}, 1, CLICK_STREAM, Priority.LOW, "1-0", 0.0)
    with pytest.raises(PermanentError, match="m-bad is not a click"):
        await ClickCounter(app.store).handle_batch([bad])
