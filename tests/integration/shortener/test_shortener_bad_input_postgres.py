"""Bad input, through the service on PostgreSQL: each request answers INVALID_ARGUMENT or
ALREADY_EXISTS with google.rpc.BadRequest naming the field, and nothing is stored (every
table's rows on every shard counted before and after, and the blob directory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from shortener_harness import bad_request_fields, migrate_all, row_counts, serving, settings_for

from blueprint.shortener.app import Shortener
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.postgres import PostgresServer, postgres_or_skip

pytestmark = pytest.mark.redis

PASTE_MAX = 1024 * 1024
URL = "https://example.com/ok"


def ttl(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def with_alias(alias: str) -> pb.ShortenRequest:
    return pb.ShortenRequest(url=URL, custom_alias=alias)


def paste(content: str = "x", language: str = "") -> pb.CreatePasteRequest:
    return pb.CreatePasteRequest(content=content, language=language)


ALIAS = {"custom_alias"}


@pytest.fixture(scope="module")
def shard_urls() -> Iterator[list[str]]:
    pg: PostgresServer = postgres_or_skip()
    with pg.databases("shortener_bad_input", 2) as urls:
        yield urls


@pytest.fixture
async def service(
    shard_urls: list[str], redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[ShortenerStub, Shortener, Path]]:
    await migrate_all(*shard_urls)
    blob_dir = tmp_path / "blobs"
    settings = settings_for(
        redis_url,
        redis_prefix,
        tmp_path,
        shard_urls,
        shortener_blob_dir=blob_dir,
        shortener_paste_max_bytes=PASTE_MAX,
        shortener_paste_inline_max_bytes=1024,
    )
    async with serving(settings) as (stub, app):
        yield stub, app, blob_dir


def blobs_in(blob_dir: Path) -> list[Path]:
    return [p for p in blob_dir.rglob("*") if p.is_file()] if blob_dir.exists() else []


BAD_REQUESTS: list[tuple[str, str, Any, set[str]]] = [
    # (case, method, request, fields named)
    ("javascript url", "Shorten", pb.ShortenRequest(url="javascript:alert(1)"), {"url"}),
    ("ftp url", "Shorten", pb.ShortenRequest(url="ftp://example.com/file"), {"url"}),
    ("10 KB url", "Shorten", pb.ShortenRequest(url=URL + "/" + "a" * 10_240), {"url"}),
    ("empty url", "Shorten", pb.ShortenRequest(url=""), {"url"}),
    ("whitespace url", "Shorten", pb.ShortenRequest(url=" \t "), {"url"}),
    ("space inside url", "Shorten", pb.ShortenRequest(url=URL + " x"), {"url"}),
    ("credentials", "Shorten", pb.ShortenRequest(url="https://u:p@example.com/"), {"url"}),
    ("control char", "Shorten", pb.ShortenRequest(url=URL + "\x07"), {"url"}),
    ("bidi override", "Shorten", pb.ShortenRequest(url="https://exa\u202emple.com/"), {"url"}),
    ("no scheme", "Shorten", pb.ShortenRequest(url="example.com/a"), {"url"}),
    ("cyrillic confusable alias", "Shorten", with_alias("p\u0430ypal"), ALIAS),
    ("fullwidth alias", "Shorten", with_alias("\uff50\uff41\uff59\uff50\uff41\uff4c"), ALIAS),
    ("reserved alias", "Shorten", with_alias("admin"), ALIAS),
    ("reserved, other case", "Shorten", with_alias("API"), ALIAS),
    ("short alias", "Shorten", with_alias("ab"), ALIAS),
    ("long alias", "Shorten", with_alias("a" * 33), ALIAS),
    ("alias charset", "Shorten", with_alias("a/b.c"), ALIAS),
    ("negative ttl", "Shorten", pb.ShortenRequest(url=URL, ttl=ttl(-60)), {"ttl"}),
    ("zero ttl", "Shorten", pb.ShortenRequest(url=URL, ttl=ttl(0)), {"ttl"}),
    ("huge ttl", "Shorten", pb.ShortenRequest(url=URL, ttl=ttl(315_576_000_000)), {"ttl"}),
    ("ttl beyond Duration", "Shorten", pb.ShortenRequest(url=URL, ttl=ttl(2**62)), {"ttl"}),
    ("mixed-sign ttl", "Shorten", pb.ShortenRequest(url=URL, ttl=ttl(5, -1)), {"ttl"}),
    (
        "everything wrong at once",
        "Shorten",
        pb.ShortenRequest(url="ftp://x", custom_alias="admin", ttl=ttl(-1)),
        {"url", "custom_alias", "ttl"},
    ),
    ("empty code", "Resolve", pb.ResolveRequest(code=""), {"code"}),
    ("code with slash", "Resolve", pb.ResolveRequest(code="../admin"), {"code"}),
    ("long code", "Resolve", pb.ResolveRequest(code="a" * 33), {"code"}),
    ("bad request id", "Resolve", pb.ResolveRequest(code="abc", request_id="a b"), {"request_id"}),
    ("get empty code", "GetLink", pb.GetLinkRequest(code=""), {"code"}),
    ("delete no token", "DeleteLink", pb.DeleteLinkRequest(code="abc"), {"management_token"}),
    ("stats negative days", "GetStats", pb.GetStatsRequest(code="abc", days=-1), {"days"}),
    ("stats too many days", "GetStats", pb.GetStatsRequest(code="abc", days=367), {"days"}),
    ("empty paste", "CreatePaste", paste(""), {"content"}),
    ("oversized paste", "CreatePaste", paste("x" * (PASTE_MAX + 1)), {"content"}),
    ("NUL in paste", "CreatePaste", paste("a\x00b"), {"content"}),
    ("bad language", "CreatePaste", paste(language="cobol"), {"language"}),
    ("language, other case", "CreatePaste", paste(language="Python"), {"language"}),
    ("paste negative ttl", "CreatePaste", pb.CreatePasteRequest(content="x", ttl=ttl(-1)), {"ttl"}),
    ("paste huge ttl", "CreatePaste", pb.CreatePasteRequest(content="x", ttl=ttl(10**12)), {"ttl"}),
    ("get paste bad code", "GetPaste", pb.GetPasteRequest(code="a b"), {"code"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_message", "fields"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    service: tuple[ShortenerStub, Shortener, Path],
    method: str,
    request_message: Any,
    fields: set[str],
) -> None:
    stub, app, blob_dir = service
    before = await row_counts(app.store.database)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, method)(request_message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_request_fields(raised.value)) == fields
    assert await row_counts(app.store.database) == before
    assert blobs_in(blob_dir) == []


async def test_a_taken_alias_is_already_exists_naming_the_field(
    service: tuple[ShortenerStub, Shortener, Path],
) -> None:
    stub, app, _ = service
    first = "https://first.example/"
    await stub.Shorten(pb.ShortenRequest(url=first, custom_alias="taken-one"))
    before = await row_counts(app.store.database)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Shorten(with_alias("taken-one"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert set(bad_request_fields(raised.value)) == {"custom_alias"}
    assert _resource_name(raised.value) == "taken-one"
    assert await row_counts(app.store.database) == before
    reply = await stub.GetLink(pb.GetLinkRequest(code="taken-one"))
    assert reply.link.url == first  # the first holder keeps it


async def test_concurrent_shortens_of_one_alias_exactly_one_wins(
    service: tuple[ShortenerStub, Shortener, Path],
    shard_urls: list[str],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    stub, app, _ = service
    # A second replica of the service: the race is between processes' writes, and only
    # the shard's primary key can settle it.
    settings = settings_for(redis_url, redis_prefix, tmp_path, shard_urls)
    async with serving(settings) as (other, _):
        before = await row_counts(app.store.database)
        aliases = [f"race-{n}" for n in range(6)]

        async def shorten(target: ShortenerStub, alias: str, n: int) -> str:
            request = pb.ShortenRequest(url=f"https://example.com/{n}", custom_alias=alias)
            try:
                await target.Shorten(request)
            except grpc.aio.AioRpcError as error:
                assert set(bad_request_fields(error)) == {"custom_alias"}
                return error.code().name
            return "OK"

        for alias in aliases:
            outcomes = await asyncio.gather(
                *(shorten((stub, other)[n % 2], alias, n) for n in range(4))
            )
            assert sorted(outcomes) == ["ALREADY_EXISTS"] * 3 + ["OK"], alias
        after = await row_counts(app.store.database)
        assert after["links"] == before["links"] + len(aliases)


def _resource_name(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ResourceInfo()
                if detail.Unpack(info):
                    return info.resource_name
    return ""
