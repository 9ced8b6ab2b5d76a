"""Builds the shortener from settings, and takes it down again.

`open_shortener` opens, in order, the sharded database (checking its schema is
migrated), the Redis client (bounded pool, traced), the id generator's worker lease, the
link cache, the click publisher, the blob store and the purge loop; `Shortener.aclose`
closes them in reverse. A failure half-way closes what was opened.

Each database engine and the Redis client has a guard (`blueprint.infra.guard`): a
circuit breaker per dependency, calls bounded by the caller's deadline, and failures
raised as `StoreUnavailable`, which the gRPC edge answers UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from prometheus_client import CollectorRegistry, Counter

from blueprint.infra.blobs import LocalBlobStore
from blueprint.infra.cache import Cache, CacheMetrics, CachePolicy
from blueprint.infra.guard import StoreGuards, StoreMetrics
from blueprint.infra.idempotency import IdempotencyRecords
from blueprint.infra.ids import IdGenerator
from blueprint.infra.queue import WorkQueue
from blueprint.infra.redis_client import GuardedRedis, guarded_redis
from blueprint.infra.sql import ShardedDatabase, current_revision
from blueprint.infra.sql.migrations import script_directory
from blueprint.infra.sql.urls import shown
from blueprint.mesh.resilience.breaker import BreakerConfig
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.instrumentation import Provider, instrument_redis_client
from blueprint.shortener.checks import Limits
from blueprint.shortener.clicks import ClickPublisher
from blueprint.shortener.links import LinkService
from blueprint.shortener.models import IDEMPOTENCY_RECORDS
from blueprint.shortener.pastes import PasteService
from blueprint.shortener.purge import PurgeLoop, PurgeReport
from blueprint.shortener.store import ReadObserver, ShortenerStore

SERVICE = "shortener"
REDIS_TIMEOUT_SECONDS = 5.0


class SchemaNotReady(RuntimeError):
    """A shard's schema is behind this release: `blueprint migrate shortener` first."""


@dataclass
class Shortener:
    links: LinkService
    pastes: PasteService
    store: ShortenerStore
    clicks: ClickPublisher
    cache: Cache[Any]
    limits: Limits
    _exit: contextlib.AsyncExitStack

    async def aclose(self) -> None:
        await self._exit.aclose()


class ShortenerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.store_reads = Counter(
            "blueprint_shortener_store_reads",
            "Database reads by what was read, shard, and route (writer or replica-N)",
            ["what", "shard", "route"],
            registry=registry,
        )
        self.clicks_dropped = Counter(
            "blueprint_shortener_clicks_dropped",
            "Clicks not published to the queue (overload or Redis down); not counted",
            registry=registry,
        )
        self.purged = Counter(
            "blueprint_shortener_purged",
            "Rows and blobs removed by the purge of expired data",
            ["kind"],
            registry=registry,
        )

    def read(self, what: str, shard: str, route: str) -> None:
        self.store_reads.labels(what, shard, route).inc()

    def report(self, report: PurgeReport) -> None:
        for kind in ("links", "pastes", "blobs", "receipts", "idempotency_records"):
            self.purged.labels(kind).inc(getattr(report, kind))


def cache_policy(settings: Settings) -> CachePolicy:
    """The shared cache settings, with the shortener's own near cache: redirects are the
    hottest read there is, and a second of staleness is what a delete may cost."""
    return CachePolicy(
        ttl_seconds=settings.cache_ttl_seconds,
        jitter=settings.cache_ttl_jitter,
        negative_ttl_seconds=settings.cache_negative_ttl_seconds,
        stale_seconds=settings.cache_stale_seconds,
        beta=settings.cache_xfetch_beta,
        lock_ttl_seconds=settings.cache_lock_ttl_seconds,
        wait_seconds=settings.cache_wait_seconds,
        near_ttl_seconds=settings.shortener_near_cache_seconds,
        near_max_entries=settings.cache_near_max_entries,
    )


def idempotency_records(settings: Settings, database: ShardedDatabase) -> IdempotencyRecords:
    return IdempotencyRecords(
        database,
        IDEMPOTENCY_RECORDS,
        lease=timedelta(seconds=settings.idempotency_lease_seconds),
        retention=timedelta(seconds=settings.idempotency_retention_seconds),
    )


def blob_store(settings: Settings) -> LocalBlobStore:
    root = settings.shortener_blob_dir or Path(settings.state_dir) / "blobs" / SERVICE
    return LocalBlobStore(root)


def redis_client(
    settings: Settings, url: str, tracer_provider: Provider | None, guards: StoreGuards
) -> GuardedRedis:
    """Bytes in and out (the cache and queue need them), a bounded pool, guarded."""
    client = guarded_redis(
        url,
        dependency=f"{SERVICE}/redis",
        guards=guards,
        max_connections=settings.shortener_redis_max_connections,
        timeout_seconds=REDIS_TIMEOUT_SECONDS,
    )
    if tracer_provider is not None:
        instrument_redis_client(client, tracer_provider)
    return client


async def check_schema(database: ShardedDatabase) -> None:
    """Refuse to serve on a shard whose schema is behind this release's migrations.

    A shard ahead of us (a newer release migrated it; its revision is unknown here) is
    fine: migrations are expand/contract, so the release before still works on it.
    """
    script = ScriptDirectory(str(script_directory(SERVICE)))
    head = script.get_current_head()
    ours = {revision.revision for revision in script.walk_revisions()}
    for shard in database.shards:
        current = await current_revision(SERVICE, shard)
        if current is None or (current in ours and current != head):
            raise SchemaNotReady(
                f"database {shard.name} ({shown(shard.writer.url)}) is at revision "
                f"{current or 'none'}, this release needs {head}: "
                f"run `blueprint migrate {SERVICE}` first"
            )


async def open_shortener(
    settings: Settings,
    *,
    redis_url: str,
    instance_id: str = SERVICE,
    tracer_provider: Provider | None = None,
    registry: CollectorRegistry | None = None,
    on_read: ReadObserver | None = None,
    clock: Callable[[], float] = time.time,
) -> Shortener:
    """Everything the servicer needs, opened; `on_read` also hears every database read.

    `clock` is the cache's wall clock (entry expiry, near cache); tests move it by hand.
    """
    metrics = ShortenerMetrics(registry) if registry is not None else None
    observers = [o for o in (on_read, metrics.read if metrics else None) if o is not None]
    guards = StoreGuards(
        BreakerConfig.from_settings(settings),
        metrics=StoreMetrics(registry) if registry is not None else None,
    )
    async with contextlib.AsyncExitStack() as stack:
        database = ShardedDatabase.from_settings(settings, SERVICE, guards=guards)
        stack.push_async_callback(database.dispose)
        await check_schema(database)
        redis = redis_client(settings, redis_url, tracer_provider, guards)
        stack.push_async_callback(redis.aclose)
        ids = await stack.enter_async_context(IdGenerator.from_settings(settings, redis))
        cache: Cache[Any] = Cache(
            redis,
            prefix=f"{settings.redis_prefix}:cache:{SERVICE}:links",
            policy=cache_policy(settings),
            name=f"{SERVICE}_links",
            metrics=CacheMetrics(registry) if registry is not None else None,
            clock=clock,
        )
        stack.push_async_callback(cache.aclose)
        clicks = ClickPublisher(
            WorkQueue(redis, prefix=settings.redis_prefix),
            max_pending=settings.shortener_max_pending_clicks,
            on_drop=metrics.clicks_dropped.inc if metrics else None,
        )
        stack.push_async_callback(clicks.aclose)
        store = ShortenerStore(database, on_read=_fan_out(observers))
        records = idempotency_records(settings, database)
        blobs = blob_store(settings)
        if settings.shortener_purge_interval_seconds > 0:
            purge = PurgeLoop(
                store,
                blobs,
                redis,
                records=records,
                lease_key=f"{settings.redis_prefix}:{SERVICE}:purge-lease",
                owner=instance_id,
                interval_seconds=settings.shortener_purge_interval_seconds,
                batch=settings.shortener_purge_batch,
                on_report=metrics.report if metrics else None,
            )
            purge.start()
            stack.push_async_callback(purge.aclose)
        links = LinkService(
            store,
            ids,
            cache=cache,
            clicks=clicks,
            records=records,
            scheme=settings.shortener_code_scheme,
            salt=settings.shortener_hash_salt,
            # Longer than replicas lag (the read-your-writes window assumes the same).
            tombstone_seconds=max(
                settings.read_your_writes_seconds, settings.cache_negative_ttl_seconds, 1.0
            ),
        )
        pastes = PasteService(
            store,
            ids,
            blobs,
            inline_max_bytes=settings.shortener_paste_inline_max_bytes,
            records=records,
        )
        shortener = Shortener(
            links, pastes, store, clicks, cache, Limits.from_settings(settings), stack.pop_all()
        )
    return shortener


def _fan_out(observers: list[ReadObserver]) -> ReadObserver | None:
    if not observers:
        return None

    def observe(what: str, shard: str, route: str) -> None:
        for observer in observers:
            observer(what, shard, route)

    return observe
