"""The shortener's repository: links, pastes and click counts over sharded databases.

Every row lives on the shard its code hashes to (`ShardedDatabase.for_key`): a link, its
daily click counts and the receipts of the clicks counted for it, so each operation is
one transaction on one shard. Uniqueness of codes is the primary key of that shard, and
since a code always hashes to the same shard, that is global uniqueness: of two
concurrent inserts of one code, the database lets exactly one commit.

Writes go to the shard's writer; reads go through its replicas, except for a caller
who wrote lately (the `caller_scope` the servicer sets), who reads the writer.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from blueprint.infra.sql import Database, ShardedDatabase
from blueprint.infra.sql.types import insert_for
from blueprint.shortener.errors import CodeTaken
from blueprint.shortener.models import ClickReceiptRow, DailyClicksRow, LinkRow, PasteRow
from blueprint.shortener.records import (
    ClickStats,
    DailyClicks,
    DeleteOutcome,
    Link,
    Paste,
    ReceivedClick,
)

Row = TypeVar("Row", LinkRow, PasteRow)

# Told of every read: what was read ("link", "paste", "stats"), the shard, and the
# route the read took ("writer" or "replica-N"). Metrics and tests listen here.
ReadObserver = Callable[[str, str, str], None]


class ShortenerStore:
    def __init__(self, database: ShardedDatabase, *, on_read: ReadObserver | None = None) -> None:
        self.database = database
        self._on_read = on_read

    # -- links ------------------------------------------------------------------------

    async def insert_link(
        self, link: Link, token_hash: str, idempotency_key: str | None = None
    ) -> Link:
        """Store a new link; `CodeTaken` when its code exists (race-safe: primary key).

        With an idempotency key, a row that an earlier attempt with the same key wrote
        is not "taken" but this link, already stored: it is returned as stored.
        """
        row = LinkRow(
            code=link.code,
            id=link.id,
            url=link.url,
            token_hash=token_hash,
            created_at=link.created_at,
            expires_at=link.expires_at,
            idempotency_key=idempotency_key,
        )
        try:
            async with self._shard(link.code).write() as session:
                session.add(row)
        except IntegrityError as error:
            if idempotency_key is not None:
                ours = await self._written_by(LinkRow, link.code, idempotency_key)
                if ours is not None:
                    return _link(ours)
            raise CodeTaken(link.code) from error
        return link

    async def find_link(self, code: str) -> Link | None:
        async with self._shard(code).read() as session:
            row = await session.get(LinkRow, code)
            self._observe("link", code, session)
        return None if row is None else _link(row)

    async def delete_link(self, code: str, token_hash: str, now: datetime) -> DeleteOutcome:
        """Delete a live link and its counts if `token_hash` is its token's."""
        async with self._shard(code).write() as session:
            stored = await session.scalar(
                select(LinkRow.token_hash)
                .where(LinkRow.code == code, _live(LinkRow.expires_at, now))
                .with_for_update()
            )
            if stored is None:
                return DeleteOutcome.MISSING
            if not hmac.compare_digest(stored, token_hash):
                return DeleteOutcome.WRONG_TOKEN
            await session.execute(delete(LinkRow).where(LinkRow.code == code))
            await session.execute(delete(DailyClicksRow).where(DailyClicksRow.code == code))
        return DeleteOutcome.DELETED

    # -- clicks -----------------------------------------------------------------------

    async def record_clicks(self, clicks: Sequence[ReceivedClick], now: datetime) -> int:
        """Count each click once per message id, in one transaction per shard; returns
        how many message ids were new.

        The receipts and the counts commit together, so a redelivered message (alone or
        in another batch) finds its receipt and counts nothing. A click on a link that is
        gone, or whose code now names another link (a deleted alias taken again), is
        received but not counted. Rows are written in key order, so two batches never
        wait on each other's locks in a cycle.
        """
        by_shard: dict[int, list[ReceivedClick]] = {}
        for click in clicks:
            by_shard.setdefault(self.database.index_for_key(click.code), []).append(click)
        new = 0
        for index, shard_clicks in sorted(by_shard.items()):
            new += await self._record_on_shard(self.database.shards[index], shard_clicks, now)
        return new

    async def _record_on_shard(
        self, shard: Database, clicks: list[ReceivedClick], now: datetime
    ) -> int:
        first = {c.message_id: c for c in reversed(clicks)}  # one click per message id
        # Core statements run with a list of parameters (executemany): compiled once and
        # cached, where a multi-row VALUES would be compiled anew for every batch.
        receipts_table = ClickReceiptRow.__table__
        daily_table = DailyClicksRow.__table__
        async with shard.write() as session:
            insert = insert_for(session)
            receipts = (
                insert(receipts_table)
                .on_conflict_do_nothing()
                .returning(receipts_table.c.message_id)
            )
            rows = [{"message_id": mid, "received_at": now} for mid in sorted(first)]
            fresh = [first[mid] for mid in await session.scalars(receipts, rows)]
            if not fresh:
                return 0
            codes = sorted({c.code for c in fresh})
            links = await session.execute(
                select(LinkRow.code, LinkRow.id).where(LinkRow.code.in_(codes))
            )
            current: dict[str, int] = {code: link_id for code, link_id in links}
            per_day = Counter((c.code, c.day) for c in fresh if current.get(c.code) == c.link_id)
            if per_day:
                count = insert(daily_table)
                await session.execute(
                    count.on_conflict_do_update(
                        index_elements=[daily_table.c.code, daily_table.c.day],
                        set_={"clicks": daily_table.c.clicks + count.excluded.clicks},
                    ),
                    [
                        {"code": code, "day": day, "clicks": n}
                        for (code, day), n in sorted(per_day.items())
                    ],
                )
        return len(fresh)

    async def click_stats(self, code: str, since: date) -> ClickStats:
        async with self._shard(code).read() as session:
            total = await session.scalar(
                select(func.coalesce(func.sum(DailyClicksRow.clicks), 0)).where(
                    DailyClicksRow.code == code
                )
            )
            rows = await session.execute(
                select(DailyClicksRow.day, DailyClicksRow.clicks)
                .where(DailyClicksRow.code == code, DailyClicksRow.day >= since)
                .order_by(DailyClicksRow.day)
            )
            daily = [DailyClicks(day, int(clicks)) for day, clicks in rows]
            self._observe("stats", code, session)
        return ClickStats(int(total or 0), daily)

    # -- pastes -----------------------------------------------------------------------

    async def insert_paste(self, paste: Paste, idempotency_key: str | None = None) -> Paste:
        """Store a new paste; `CodeTaken` when its code exists, unless an earlier attempt
        with the same idempotency key wrote it (then it is returned as stored)."""
        row = PasteRow(
            code=paste.code,
            id=paste.id,
            language=paste.language,
            size_bytes=paste.size_bytes,
            content=paste.content,
            blob_key=paste.blob_key,
            created_at=paste.created_at,
            expires_at=paste.expires_at,
            idempotency_key=idempotency_key,
        )
        try:
            async with self._shard(paste.code).write() as session:
                session.add(row)
        except IntegrityError as error:
            if idempotency_key is not None:
                ours = await self._written_by(PasteRow, paste.code, idempotency_key)
                if ours is not None:
                    return _paste(ours)
            raise CodeTaken(paste.code) from error
        return paste

    async def find_paste(self, code: str) -> Paste | None:
        async with self._shard(code).read() as session:
            row = await session.get(PasteRow, code)
            self._observe("paste", code, session)
        return None if row is None else _paste(row)

    # -- purge ------------------------------------------------------------------------

    async def purge_links(self, expired_before: datetime, batch: int) -> int:
        """Delete links (and their counts) expired before the time; how many."""
        purged = 0
        for shard in self.database.shards:
            while True:
                async with shard.write() as session:
                    codes = (
                        await session.scalars(
                            select(LinkRow.code)
                            .where(LinkRow.expires_at < expired_before)
                            .limit(batch)
                        )
                    ).all()
                    if codes:
                        await session.execute(delete(LinkRow).where(LinkRow.code.in_(codes)))
                        await session.execute(
                            delete(DailyClicksRow).where(DailyClicksRow.code.in_(codes))
                        )
                purged += len(codes)
                if len(codes) < batch:
                    break
        return purged

    async def purge_pastes(self, expired_before: datetime, batch: int) -> tuple[int, list[str]]:
        """Delete pastes expired before the time: how many, and the blob keys they held
        (to delete after the rows, so no row ever points at a missing blob)."""
        purged, blob_keys = 0, []
        for shard in self.database.shards:
            while True:
                async with shard.write() as session:
                    rows = (
                        await session.execute(
                            select(PasteRow.code, PasteRow.blob_key)
                            .where(PasteRow.expires_at < expired_before)
                            .limit(batch)
                        )
                    ).all()
                    codes = [code for code, _ in rows]
                    if codes:
                        await session.execute(delete(PasteRow).where(PasteRow.code.in_(codes)))
                purged += len(codes)
                blob_keys += [key for _, key in rows if key is not None]
                if len(codes) < batch:
                    break
        return purged, blob_keys

    async def purge_receipts(self, received_before: datetime, batch: int) -> int:
        purged = 0
        for shard in self.database.shards:
            while True:
                async with shard.write() as session:
                    ids = (
                        await session.scalars(
                            select(ClickReceiptRow.message_id)
                            .where(ClickReceiptRow.received_at < received_before)
                            .limit(batch)
                        )
                    ).all()
                    if ids:
                        await session.execute(
                            delete(ClickReceiptRow).where(ClickReceiptRow.message_id.in_(ids))
                        )
                purged += len(ids)
                if len(ids) < batch:
                    break
        return purged

    # -- helpers ----------------------------------------------------------------------

    async def _written_by(self, model: type[Row], code: str, idempotency_key: str) -> Row | None:
        """The row under `code` if the request with this key wrote it; read on the writer,
        where that write committed."""
        async with self._shard(code).write() as session:
            row = await session.get(model, code)
        return row if row is not None and row.idempotency_key == idempotency_key else None

    def _shard(self, code: str) -> Database:
        return self.database.for_key(code)

    def _observe(self, what: str, code: str, session: AsyncSession) -> None:
        if self._on_read is not None:
            shard = f"shard-{self.database.index_for_key(code)}"
            self._on_read(what, shard, str(session.info.get("route", "")))


def _live(expires_at: Any, now: datetime) -> Any:
    return or_(expires_at.is_(None), expires_at > now)


def _link(row: LinkRow) -> Link:
    return Link(row.code, row.id, row.url, row.created_at, row.expires_at)


def _paste(row: PasteRow) -> Paste:
    return Paste(
        code=row.code,
        id=row.id,
        language=row.language,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        content=row.content,
        blob_key=row.blob_key,
    )
