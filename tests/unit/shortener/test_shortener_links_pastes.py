"""The link and paste services on in-memory stores: expiry, deletes, clicks, blobs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from blueprint.infra.blobs import LocalBlobStore
from blueprint.mesh.errors import NotFound
from blueprint.shortener.clicks import Click
from blueprint.shortener.errors import PermissionDenied
from blueprint.shortener.links import LinkService, hash_token
from blueprint.shortener.pastes import PasteService, blob_key
from blueprint.shortener.records import ClickStats, DailyClicks, DeleteOutcome, Link, Paste


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Ids:
    def __init__(self) -> None:
        self.last = 10**12

    async def next_id(self) -> int:
        self.last += 1
        return self.last


class Store:
    def __init__(self) -> None:
        self.links: dict[str, tuple[Link, str]] = {}
        self.pastes: dict[str, Paste] = {}
        self.since: date | None = None
        self.fail_paste_insert = False

    async def insert_link(
        self, link: Link, token_hash: str, idempotency_key: str | None = None
    ) -> Link:
        self.links[link.code] = (link, token_hash)
        return link

    async def find_link(self, code: str) -> Link | None:
        found = self.links.get(code)
        return found[0] if found else None

    async def delete_link(self, code: str, token_hash: str, now: datetime) -> DeleteOutcome:
        found = self.links.get(code)
        if found is None or found[0].expired(now):
            return DeleteOutcome.MISSING
        if found[1] != token_hash:
            return DeleteOutcome.WRONG_TOKEN
        del self.links[code]
        return DeleteOutcome.DELETED

    async def click_stats(self, code: str, since: date) -> ClickStats:
        self.since = since
        return ClickStats(3, [DailyClicks(since, 3)])

    async def insert_paste(self, paste: Paste, idempotency_key: str | None = None) -> Paste:
        if self.fail_paste_insert:
            raise ConnectionError("database away")
        self.pastes[paste.code] = paste
        return paste

    async def find_paste(self, code: str) -> Paste | None:
        return self.pastes.get(code)


class Clicks:
    def __init__(self) -> None:
        self.published: list[tuple[Click, str]] = []

    def publish(self, click: Click, message_id: str) -> None:
        self.published.append((click, message_id))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def clicks() -> Clicks:
    return Clicks()


@pytest.fixture
def links(store: Store, clicks: Clicks, clock: Clock) -> LinkService:
    return LinkService(store, Ids(), clicks=clicks, clock=clock)


async def test_resolve_answers_the_url_and_publishes_one_click(
    links: LinkService, clicks: Clicks, clock: Clock
) -> None:
    created = await links.shorten("https://example.com/a", "my-link", None)
    assert await links.resolve("my-link") == "https://example.com/a"
    assert await links.resolve("my-link", "req-1") == "https://example.com/a"
    (first, first_id), (second, second_id) = clicks.published
    assert first == Click("my-link", created.link.id, clock.now) == second
    assert second_id == "click:my-link:req-1" and first_id != second_id


async def test_unknown_and_expired_links_are_not_found_and_count_no_click(
    links: LinkService, clicks: Clicks, clock: Clock
) -> None:
    with pytest.raises(NotFound, match="no link 'nope'"):
        await links.resolve("nope")
    await links.shorten("https://example.com/a", "brief", timedelta(seconds=10))
    clock.now += timedelta(seconds=9, microseconds=999_999)
    assert await links.get("brief")
    clock.now += timedelta(microseconds=1)
    for call in (links.resolve, links.get):
        with pytest.raises(NotFound, match="expired"):
            await call("brief")
    with pytest.raises(NotFound):
        await links.stats("brief", 30)
    assert not clicks.published


async def test_delete_needs_the_token_shorten_returned(links: LinkService, store: Store) -> None:
    created = await links.shorten("https://example.com/a", "mine", None)
    assert store.links["mine"][1] == hash_token(created.management_token)  # never the token
    with pytest.raises(PermissionDenied):
        await links.delete("mine", "not-the-token")
    assert await links.get("mine")
    await links.delete("mine", created.management_token)
    with pytest.raises(NotFound):
        await links.get("mine")
    with pytest.raises(NotFound):
        await links.delete("mine", created.management_token)


async def test_stats_cover_the_last_days_up_to_today(
    links: LinkService, store: Store, clock: Clock
) -> None:
    await links.shorten("https://example.com/a", "counted", None)
    stats = await links.stats("counted", 7)
    assert stats.total == 3
    assert store.since == clock.now.date() - timedelta(days=6)


# --- pastes --------------------------------------------------------------------------


def pastes_service(store: Store, tmp_path: Path, clock: Clock) -> PasteService:
    return PasteService(store, Ids(), LocalBlobStore(tmp_path), inline_max_bytes=16, clock=clock)


async def test_small_pastes_live_in_the_row_large_ones_in_the_blob_store(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    pastes = pastes_service(store, tmp_path, clock)
    small = await pastes.create("print('hi')", "python", None)
    assert small.content == "print('hi')" and small.blob_key is None
    large_text = "ü" * 9  # 18 bytes: over the 16-byte threshold, though 9 characters
    large = await pastes.create(large_text, "text", timedelta(hours=1))
    assert large.content is None and large.blob_key == blob_key(large.code)
    assert large.size_bytes == 18 and large.expires_at == clock.now + timedelta(hours=1)
    assert (tmp_path / "pastes" / large.code).read_bytes() == large_text.encode()
    assert await pastes.get(small.code) == (small, "print('hi')")
    assert await pastes.get(large.code) == (large, large_text)


async def test_a_failed_insert_takes_its_blob_away(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    store.fail_paste_insert = True
    with pytest.raises(ConnectionError):
        await pastes_service(store, tmp_path, clock).create("x" * 100, "text", None)
    assert not list((tmp_path / "pastes").iterdir())


async def test_expired_or_blobless_pastes_are_not_found(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    pastes = pastes_service(store, tmp_path, clock)
    brief = await pastes.create("short-lived", "text", timedelta(minutes=1))
    clock.now += timedelta(minutes=1)
    with pytest.raises(NotFound, match="expired"):
        await pastes.get(brief.code)
    lost = await pastes.create("y" * 100, "text", None)
    (tmp_path / "pastes" / lost.code).unlink()
    with pytest.raises(NotFound, match="no content"):
        await pastes.get(lost.code)
    with pytest.raises(NotFound, match="no paste"):
        await pastes.get("nope")
