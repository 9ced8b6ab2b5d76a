"""Removing what has expired: links with their counts, pastes with their blobs, click
receipts older than any redelivery, and idempotency records past their retention.

Expired links and pastes already answer NOT_FOUND; purging reclaims their space and
frees their codes (a custom alias can be taken again). Two ways to run it:

- `blueprint serve shortener` does it every BLUEPRINT_SHORTENER_PURGE_INTERVAL_SECONDS
  (`PurgeLoop`). Each replica tries; a lease in Redis (SET NX PX for one interval) lets
  one of them purge per interval.
- Once, from a shell or a Kubernetes CronJob: `python -m blueprint.shortener.purge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import redis.asyncio as aioredis

from blueprint.errors import StoreUnavailable
from blueprint.infra.blobs import BlobStore
from blueprint.infra.idempotency import IdempotencyRecords
from blueprint.shortener.records import utc_now
from blueprint.shortener.store import ShortenerStore

log = logging.getLogger(__name__)

# Rows are purged this long after they expire: a GetPaste that read the row just before
# its expiry has fetched the blob by then.
GRACE = timedelta(minutes=1)
# Click redeliveries come within the queue's visibility timeout, retried Resolves with a
# request_id within minutes; two days of receipts cover both with room to spare.
RECEIPT_RETENTION = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    links: int
    pastes: int
    blobs: int
    receipts: int
    idempotency_records: int = 0


async def purge_expired(
    store: ShortenerStore,
    blobs: BlobStore,
    *,
    now: datetime,
    batch: int = 500,
    grace: timedelta = GRACE,
    receipt_retention: timedelta = RECEIPT_RETENTION,
    records: IdempotencyRecords | None = None,
) -> PurgeReport:
    """Delete, on every shard, what expired before `now - grace` (idempotency records:
    when their retention ends); in batches of `batch` rows, each its own transaction."""
    cutoff = now - grace
    links = await store.purge_links(cutoff, batch)
    pastes, blob_keys = await store.purge_pastes(cutoff, batch)
    deleted_blobs = 0
    for key in blob_keys:
        deleted_blobs += await blobs.delete(key)
    receipts = await store.purge_receipts(now - receipt_retention, batch)
    keys = await records.purge(now, batch) if records is not None else 0
    return PurgeReport(links, pastes, deleted_blobs, receipts, keys)


class PurgeLoop:
    """`purge_expired` every interval, by whichever replica takes that interval's lease."""

    def __init__(
        self,
        store: ShortenerStore,
        blobs: BlobStore,
        redis: aioredis.Redis,
        *,
        lease_key: str,
        owner: str,
        interval_seconds: float,
        batch: int,
        records: IdempotencyRecords | None = None,
        on_report: Callable[[PurgeReport], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not interval_seconds > 0:
            raise ValueError("interval_seconds must be > 0")
        self._store = store
        self._blobs = blobs
        self._redis = redis
        self._lease_key = lease_key
        self._owner = owner
        self._interval = interval_seconds
        self._batch = batch
        self._records = records
        self._on_report = on_report
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shortener-purge")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> PurgeReport | None:
        """Purge if this replica wins this interval's lease; None if another did."""
        won = await self._redis.set(
            self._lease_key, self._owner, nx=True, px=max(1, int(self._interval * 1000))
        )
        if not won:
            return None
        report = await purge_expired(
            self._store, self._blobs, now=utc_now(), batch=self._batch, records=self._records
        )
        if self._on_report is not None:
            self._on_report(report)
        if any(asdict(report).values()):
            log.info("purged expired rows", extra=asdict(report))
        return report

    async def _run(self) -> None:
        while True:
            # Jittered, so replicas started together do not all ask at once.
            await asyncio.sleep(self._interval * (0.5 + self._rng.random() / 2))
            try:
                await self.run_once()
            except StoreUnavailable as error:
                log.warning("purge failed; trying again next interval: %s", error)


def main() -> int:
    """`python -m blueprint.shortener.purge`: purge once with the environment's settings."""
    from blueprint.infra.outages import translated
    from blueprint.infra.sql import ShardedDatabase
    from blueprint.mesh.settings import load_or_exit
    from blueprint.shortener.app import (
        SERVICE,
        SchemaNotReady,
        blob_store,
        check_schema,
        idempotency_records,
    )

    settings = load_or_exit()

    async def once() -> PurgeReport:
        database = ShardedDatabase.from_settings(settings, SERVICE)
        try:
            with translated(SERVICE):  # the schema check reads unguarded
                await check_schema(database)
            return await purge_expired(
                ShortenerStore(database),
                blob_store(settings),
                now=utc_now(),
                batch=settings.shortener_purge_batch,
                records=idempotency_records(settings, database),
            )
        finally:
            await database.dispose()

    try:
        report = asyncio.run(once())
    except SchemaNotReady as error:
        print(f"shortener purge: {error}", file=sys.stderr)
        return 2
    except StoreUnavailable as error:
        print(f"shortener purge: a store did not answer: {error}", file=sys.stderr)
        return 1
    print(" ".join(f"{name}={count}" for name, count in asdict(report).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
