"""Idempotency keys through the shortener's gRPC API, on real PostgreSQL (two shards:
a key's record and its link usually live on different ones) and on SQLite.

Same key and body: the first answer, one row. Another body: FAILED_PRECONDITION naming
the field. Concurrent attempts: one link; each answer is that link or ABORTED with
RetryInfo. An owner that died mid-way: the next attempt resumes with its pinned code.
Records expire, are purged, and the key is then new.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2, status_pb2
from shortener_harness import bad_request_fields, migrate_all, serving, settings_for

from blueprint.infra.idempotency import IdempotencyRecords, Resume
from blueprint.infra.sql import ShardedDatabase, sqlite_url
from blueprint.mesh.idempotency import body_digest
from blueprint.mesh.settings import Settings
from blueprint.shortener.app import SERVICE, Shortener, idempotency_records
from blueprint.shortener.links import SHORTEN, ShortenPlan, hash_token
from blueprint.shortener.models import IDEMPOTENCY_RECORDS
from blueprint.shortener.purge import purge_expired
from blueprint.shortener.records import Link
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.postgres import postgres_or_skip

pytestmark = pytest.mark.redis


@pytest.fixture(params=["postgres", "sqlite"])
def shard_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    if request.param == "sqlite":
        yield []  # the local default: one SQLite file under the state directory
        return
    with postgres_or_skip().databases("shortener_idempotency", 2) as urls:
        yield urls


@pytest.fixture
async def settings(
    shard_urls: list[str], redis_url: str, redis_prefix: str, tmp_path: Path
) -> Settings:
    settings = settings_for(redis_url, redis_prefix, tmp_path, shard_urls)
    await migrate_all(*(shard_urls or [str(sqlite_url(settings.state_dir, SERVICE))]))
    return settings


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[ShortenerStub, Shortener]]:
    async with serving(settings) as (stub, app):
        yield stub, app


def _shorten(url: str, key: str, **extra: Any) -> pb.ShortenRequest:
    return pb.ShortenRequest(url=url, idempotency_key=key, **extra)


async def _rows(
    database: ShardedDatabase, table: str, key: str, columns: str = "code, url"
) -> list[tuple[Any, ...]]:
    """The rows the key wrote, on every shard."""
    rows: list[tuple[Any, ...]] = []
    for shard in database.shards:
        async with shard.writer.connect() as connection:
            result = await connection.execute(
                sa.text(f"SELECT {columns} FROM {table} WHERE idempotency_key = :key"),
                {"key": key},
            )
            rows += [tuple(row) for row in result]
    return rows


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    for name, value in error.trailing_metadata() or ():
        if name == "grpc-status-details-bin":
            return list(status_pb2.Status.FromString(value).details)
    return []


async def test_the_same_key_and_body_answer_the_first_answer_and_store_one_link(
    served: tuple[ShortenerStub, Shortener],
) -> None:
    stub, app = served
    request = _shorten("https://example.com/once", "key-same-1")
    first = await stub.Shorten(request)
    again = await stub.Shorten(request)
    assert again == first  # same code, same management token, same times
    assert await _rows(app.store.database, "links", "key-same-1") == [
        (first.link.code, "https://example.com/once")
    ]
    # The token that came back twice is the link's: it deletes it.
    await stub.DeleteLink(
        pb.DeleteLinkRequest(code=first.link.code, management_token=first.management_token)
    )


async def test_the_key_with_another_body_fails_its_precondition_naming_the_field(
    served: tuple[ShortenerStub, Shortener],
) -> None:
    stub, app = served
    await stub.Shorten(_shorten("https://example.com/a", "key-reused-1"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Shorten(_shorten("https://example.com/b", "key-reused-1"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "idempotency_key" in bad_request_fields(refused.value)
    failure = error_details_pb2.PreconditionFailure()
    assert any(detail.Unpack(failure) for detail in _details(refused.value))
    assert failure.violations[0].type == "IDEMPOTENCY_KEY_REUSED"
    assert len(await _rows(app.store.database, "links", "key-reused-1")) == 1


async def test_a_malformed_key_is_an_invalid_argument(
    served: tuple[ShortenerStub, Shortener],
) -> None:
    stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Shorten(_shorten("https://example.com/", "spaces are not allowed"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_request_fields(refused.value)) == {"idempotency_key"}


async def test_concurrent_attempts_with_one_key_store_one_link(
    served: tuple[ShortenerStub, Shortener],
) -> None:
    stub, app = served
    request = _shorten("https://example.com/racing", "key-race-1")
    answers = await asyncio.gather(
        *(stub.Shorten(request) for _ in range(8)), return_exceptions=True
    )
    links = await _rows(app.store.database, "links", "key-race-1")
    assert len(links) == 1
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            assert answer.code() == grpc.StatusCode.ABORTED, answer
            retry = error_details_pb2.RetryInfo()
            assert any(detail.Unpack(retry) for detail in _details(answer))
        else:
            assert isinstance(answer, pb.ShortenResponse)
            assert answer.link.code == links[0][0]
    # Once the owner is done, every repeat gets its answer.
    assert (await stub.Shorten(request)).link.code == links[0][0]


async def test_an_owner_that_died_is_resumed_with_its_pinned_code_and_token(
    served: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    stub, app = served
    database = app.store.database
    request = _shorten("https://example.com/resumed", "key-dead-owner-1")
    # The owner claimed the key and stored the link, then died before recording its
    # answer: its lease (2 s) lapsed long ago.
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    plan = ShortenPlan(((4242, "pinnedCode1"), (4243, "pinnedCode2")), "pinned-token", long_ago)
    owner = IdempotencyRecords(database, IDEMPOTENCY_RECORDS, clock=lambda: long_ago)
    claimed = await owner.claim(
        SHORTEN, request.idempotency_key, body_digest(request), plan.encode()
    )
    assert not isinstance(claimed, Resume)
    link = Link("pinnedCode1", 4242, "https://example.com/resumed", long_ago, None)
    await app.store.insert_link(link, hash_token("pinned-token"), request.idempotency_key)

    resumed = await stub.Shorten(request)
    assert resumed.link.code == "pinnedCode1"
    assert resumed.management_token == "pinned-token"
    assert await _rows(database, "links", request.idempotency_key) == [
        ("pinnedCode1", "https://example.com/resumed")
    ]
    assert await stub.Shorten(request) == resumed  # and recorded now


async def test_an_owner_that_died_before_writing_is_resumed_with_its_plan(
    served: tuple[ShortenerStub, Shortener],
) -> None:
    stub, app = served
    request = _shorten("https://example.com/never-written", "key-dead-owner-2")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    plan = ShortenPlan(((777, "plannedOnly1"),), "planned-token", long_ago)
    owner = IdempotencyRecords(app.store.database, IDEMPOTENCY_RECORDS, clock=lambda: long_ago)
    await owner.claim(SHORTEN, request.idempotency_key, body_digest(request), plan.encode())

    resumed = await stub.Shorten(request)
    assert (resumed.link.code, resumed.management_token) == ("plannedOnly1", "planned-token")


async def test_records_expire_are_purged_and_the_key_is_then_new(
    served: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    stub, app = served
    first = await stub.Shorten(_shorten("https://example.com/old", "key-expiring-1"))
    records = idempotency_records(settings, app.store.database)
    report = await purge_expired(
        app.store, _NoBlobs(), now=datetime.now(UTC) + timedelta(hours=25), records=records
    )
    assert report.idempotency_records >= 1
    # 25 hours on, the key names a new request: no mismatch, a new link.
    again = await stub.Shorten(_shorten("https://example.com/new", "key-expiring-1"))
    assert again.link.code != first.link.code


async def test_create_paste_with_a_key_stores_one_paste_and_one_blob(
    served: tuple[ShortenerStub, Shortener], settings: Settings
) -> None:
    stub, app = served
    big = "x" * (settings.shortener_paste_inline_max_bytes + 1)  # goes to the blob store
    request = pb.CreatePasteRequest(content=big, idempotency_key="paste-key-1")
    first, again = await stub.CreatePaste(request), await stub.CreatePaste(request)
    assert again == first
    rows = await _rows(app.store.database, "pastes", "paste-key-1", "code, blob_key")
    assert rows == [(first.paste.code, f"pastes/{first.paste.code}")]
    fetched = await stub.GetPaste(pb.GetPasteRequest(code=first.paste.code))
    assert fetched.paste.content == big


class _NoBlobs:
    async def put(self, key: str, data: bytes) -> None:
        raise AssertionError("purge writes no blob")

    async def get(self, key: str) -> bytes:
        raise AssertionError("purge reads no blob")

    async def delete(self, key: str) -> bool:
        return False
