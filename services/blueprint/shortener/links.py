"""Links: shorten, resolve, inspect, delete, count clicks. Inputs arrive validated.

The read path is the guide's: cache-aside in Redis (with a short in-process near cache
for hot codes, negative caching of unknown codes, single-flight loads and XFetch early
refresh, all in `blueprint.infra.cache`), then the shard's read replicas.

Three writes keep the cache honest:
- Shorten writes the new link through to the cache, so a code is cached from the moment
  anyone can know it, and a negative entry cached by an earlier guess is replaced.
- Delete writes a tombstone for longer than a replica may lag, so a replica that has not
  seen the delete yet cannot put the link back in the cache. Other replicas' near caches
  may still answer it for up to the near-cache TTL (a second by default).
- Cached entries carry the expiry, so an expired link answers NOT_FOUND however long its
  entry lives.

One race is left open: a load of the code that read the row before the delete committed
and writes its entry after the tombstone puts the link back until the entry's TTL. The
window is one database read long, and only for a code being loaded as it is deleted.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from blueprint.errors import StoreUnavailable
from blueprint.infra.cache import Cache, CacheWaitTimeout
from blueprint.mesh.errors import NotFound
from blueprint.shortener import clicks, codes
from blueprint.shortener.clicks import Click
from blueprint.shortener.errors import CodesExhausted, CodeTaken, PermissionDenied
from blueprint.shortener.records import ClickStats, DeleteOutcome, Link, utc_now

log = logging.getLogger(__name__)

CodeScheme = Literal["snowflake", "hash"]
_TOMBSTONE = {"deleted": True}


class LinkStore(Protocol):
    async def insert_link(self, link: Link, token_hash: str) -> None: ...
    async def find_link(self, code: str) -> Link | None: ...
    async def delete_link(self, code: str, token_hash: str, now: datetime) -> DeleteOutcome: ...
    async def click_stats(self, code: str, since: date) -> ClickStats: ...


class IdSource(Protocol):
    async def next_id(self) -> int: ...


class ClickSink(Protocol):
    def publish(self, click: Click, message_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Created:
    link: Link
    management_token: str  # returned once; only its hash is stored


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LinkService:
    def __init__(
        self,
        store: LinkStore,
        ids: IdSource,
        *,
        cache: Cache[Any] | None = None,
        clicks: ClickSink | None = None,
        scheme: CodeScheme = "snowflake",
        salt: str = "",
        tombstone_seconds: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if scheme not in ("snowflake", "hash"):
            raise ValueError(f"unknown code scheme {scheme!r}")
        self._store = store
        self._ids = ids
        self._cache = cache
        self._clicks = clicks
        self._scheme = scheme
        self._salt = salt
        self._tombstone_seconds = tombstone_seconds
        self._clock = clock

    async def shorten(self, url: str, alias: str | None, ttl: timedelta | None) -> Created:
        """A new link to `url`; `CodeTaken` if `alias` is someone else's."""
        now = self._clock()
        expires_at = now + ttl if ttl is not None else None
        token = secrets.token_urlsafe(24)
        token_hash = hash_token(token)
        if alias is not None:
            link = Link(alias, await self._ids.next_id(), url, now, expires_at)
            await self._store.insert_link(link, token_hash)
        else:
            link = await self._insert_generated(url, now, expires_at, token_hash)
        await self._write_through(link.code, _to_cache(link), None)
        return Created(link, token)

    async def resolve(self, code: str, request_id: str = "") -> str:
        """The URL behind `code`; counts a click (in the background)."""
        link = await self._live(code)
        if self._clicks is not None:
            click = Click(code, link.id, self._clock())
            self._clicks.publish(click, clicks.message_id(code, request_id))
        return link.url

    async def get(self, code: str) -> Link:
        return await self._live(code)

    async def delete(self, code: str, management_token: str) -> None:
        outcome = await self._store.delete_link(code, hash_token(management_token), self._clock())
        if outcome is DeleteOutcome.MISSING:
            raise NotFound(f"no link {code!r}")
        if outcome is DeleteOutcome.WRONG_TOKEN:
            raise PermissionDenied(f"management_token is not the token of link {code!r}")
        await self._write_through(code, _TOMBSTONE, self._tombstone_seconds)

    async def stats(self, code: str, days: int) -> ClickStats:
        """Clicks counted so far (total, and per day for the last `days` UTC days)."""
        await self._live(code)
        since = self._clock().date() - timedelta(days=days - 1)
        return await self._store.click_stats(code, since)

    # -- reading ----------------------------------------------------------------------

    async def _live(self, code: str) -> Link:
        link = await self._find(code)
        if link is None:
            raise NotFound(f"no link {code!r}")
        if link.expired(self._clock()):
            raise NotFound(f"link {code!r} has expired")
        return link

    async def _find(self, code: str) -> Link | None:
        if self._cache is None:
            return await self._store.find_link(code)
        try:
            cached = await self._cache.get_or_load(code, lambda: self._load(code))
        except (StoreUnavailable, CacheWaitTimeout) as error:
            # The cache spares the database; it is not needed to answer.
            log.warning("link cache unavailable, reading the database: %s", error)
            return await self._store.find_link(code)
        return _from_cache(cached)

    async def _load(self, code: str) -> dict[str, Any] | None:
        link = await self._store.find_link(code)
        return None if link is None else _to_cache(link)

    async def _write_through(self, code: str, entry: dict[str, Any], ttl: float | None) -> None:
        if self._cache is None:
            return
        try:
            await self._cache.set(code, entry, ttl=ttl)
        except StoreUnavailable as error:
            # Not fatal: entries age out; until then a stale one may answer.
            log.warning("link cache not updated for %r: %s", code, error)

    # -- generating codes -------------------------------------------------------------

    async def _insert_generated(
        self, url: str, now: datetime, expires_at: datetime | None, token_hash: str
    ) -> Link:
        async for link_id, code in self._candidates(url):
            link = Link(code, link_id, url, now, expires_at)
            try:
                await self._store.insert_link(link, token_hash)
            except CodeTaken:
                log.info("generated code taken; trying the next", extra={"code": code})
                continue
            return link
        raise CodesExhausted(
            f"every code the {self._scheme} scheme tried for this url is taken; give a custom_alias"
        )

    async def _candidates(self, url: str) -> AsyncIterator[tuple[int, str]]:
        if self._scheme == "hash":
            link_id = await self._ids.next_id()
            for code in codes.hash_codes(url, self._salt):
                yield link_id, code
            return
        for _ in range(codes.MAX_SNOWFLAKE_ATTEMPTS):
            link_id = await self._ids.next_id()
            yield link_id, codes.snowflake_code(link_id)


def _to_cache(link: Link) -> dict[str, Any]:
    return {
        "code": link.code,
        "id": link.id,
        "url": link.url,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat() if link.expires_at else None,
    }


def _from_cache(entry: dict[str, Any] | None) -> Link | None:
    if entry is None or entry.get("deleted"):
        return None
    expires_at = entry["expires_at"]
    return Link(
        code=entry["code"],
        id=entry["id"],
        url=entry["url"],
        created_at=datetime.fromisoformat(entry["created_at"]),
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
    )
