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

Shorten with an idempotency key runs once per key (`blueprint.infra.idempotency`). Its
plan, made before anything is written, pins what a retry must reuse: the codes to try in
order (with their link ids), the management token and the creation time. A resumed
attempt walks the same codes; a row its own key wrote is its link, so however many
attempts run, one link is stored and every one answers the same code and token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from blueprint.errors import StoreUnavailable
from blueprint.infra.cache import Cache, CacheWaitTimeout
from blueprint.infra.idempotency import Keyed, Records, run_once
from blueprint.mesh.errors import NotFound
from blueprint.shortener import clicks, codes
from blueprint.shortener.clicks import Click
from blueprint.shortener.errors import CodesExhausted, CodeTaken, PermissionDenied
from blueprint.shortener.records import ClickStats, DeleteOutcome, Link, utc_now

log = logging.getLogger(__name__)

CodeScheme = Literal["snowflake", "hash"]
SHORTEN = "shortener.Shorten"  # the idempotency scope of Shorten's keys
_TOMBSTONE = {"deleted": True}


class LinkStore(Protocol):
    async def insert_link(
        self, link: Link, token_hash: str, idempotency_key: str | None = None
    ) -> Link: ...
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
    # Returned to the caller; the link row keeps only its hash (an idempotency record
    # keeps the answer, token included, for replays until it expires).
    management_token: str

    def encode(self) -> bytes:
        return json.dumps({"link": _to_cache(self.link), "token": self.management_token}).encode()

    @staticmethod
    def decode(data: bytes) -> Created:
        fields = json.loads(data)
        link = _from_cache(fields["link"])
        assert link is not None
        return Created(link, fields["token"])


@dataclass(frozen=True, slots=True)
class ShortenPlan:
    """What every attempt of one Shorten request uses: codes to try in order, with
    their link ids; the token; the creation time."""

    candidates: tuple[tuple[int, str], ...]
    token: str
    created_at: datetime

    def encode(self) -> bytes:
        return json.dumps(
            {
                "candidates": self.candidates,
                "token": self.token,
                "created_at": self.created_at.isoformat(),
            }
        ).encode()

    @staticmethod
    def decode(data: bytes) -> ShortenPlan:
        fields = json.loads(data)
        return ShortenPlan(
            tuple((int(link_id), str(code)) for link_id, code in fields["candidates"]),
            fields["token"],
            datetime.fromisoformat(fields["created_at"]),
        )


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
        records: Records | None = None,
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
        self._records = records
        self._scheme = scheme
        self._salt = salt
        self._tombstone_seconds = tombstone_seconds
        self._clock = clock

    async def shorten(
        self, url: str, alias: str | None, ttl: timedelta | None, keyed: Keyed | None = None
    ) -> Created:
        """A new link to `url`; `CodeTaken` if `alias` is someone else's.

        With `keyed`, once per idempotency key: a repeat of the request answers the first
        answer (PreconditionFailed for another request with the key, Aborted while
        another attempt holds it).
        """
        plan = await self._plan(url, alias)
        if keyed is None:
            return await self._shorten_as_planned(plan, url, alias, ttl, None)
        if self._records is None:
            raise RuntimeError("LinkService needs records to take idempotency keys")

        async def work(pinned: bytes) -> bytes:
            planned = ShortenPlan.decode(pinned)
            created = await self._shorten_as_planned(planned, url, alias, ttl, keyed.key)
            return created.encode()

        return Created.decode(await run_once(self._records, SHORTEN, keyed, plan.encode(), work))

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

    # -- creating links ---------------------------------------------------------------

    async def _plan(self, url: str, alias: str | None) -> ShortenPlan:
        """Everything chosen up front (ids are cheap, and unused ones harmless)."""
        token = secrets.token_urlsafe(24)
        if alias is not None:
            candidates = [(await self._ids.next_id(), alias)]
        elif self._scheme == "hash":
            link_id = await self._ids.next_id()
            candidates = [(link_id, code) for code in codes.hash_codes(url, self._salt)]
        else:
            ids = [await self._ids.next_id() for _ in range(codes.MAX_SNOWFLAKE_ATTEMPTS)]
            candidates = [(link_id, codes.snowflake_code(link_id)) for link_id in ids]
        return ShortenPlan(tuple(candidates), token, self._clock())

    async def _shorten_as_planned(
        self,
        plan: ShortenPlan,
        url: str,
        alias: str | None,
        ttl: timedelta | None,
        idempotency_key: str | None,
    ) -> Created:
        expires_at = plan.created_at + ttl if ttl is not None else None
        token_hash = hash_token(plan.token)
        for link_id, code in plan.candidates:
            link = Link(code, link_id, url, plan.created_at, expires_at)
            try:
                stored = await self._store.insert_link(link, token_hash, idempotency_key)
            except CodeTaken:
                if alias is not None:
                    raise
                log.info("generated code taken; trying the next", extra={"code": code})
                continue
            await self._write_through(stored.code, _to_cache(stored), None)
            return Created(stored, plan.token)
        raise CodesExhausted(
            f"every code the {self._scheme} scheme tried for this url is taken; give a custom_alias"
        )


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
