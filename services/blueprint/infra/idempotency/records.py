"""Idempotency records in SQL: one row per (scope, key), on the shard the key hashes to.

Each service creates the table in its own Alembic migration (`records_table` gives its
shape) and keeps its own records; `scope` is the method, so one key may be used once per
method. A claim is one transaction on the key's shard: an INSERT that wins for a new
key (one statement in the common case), else the row read FOR UPDATE and decided on
(`decisions.decide`). Records expire after the retention (24 h by default) and are
then purged; a key whose record has expired counts as new.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Row

from blueprint.infra.idempotency.decisions import (
    DONE,
    PENDING,
    Decision,
    Fresh,
    Record,
    Resume,
    decide,
)
from blueprint.infra.sql import Database, ShardedDatabase
from blueprint.infra.sql.types import UtcDateTime, insert_for
from blueprint.mesh.resilience import deadlines

TABLE = "idempotency_records"
SCOPE_LENGTH = 200
KEY_LENGTH = 128
DEFAULT_LEASE = timedelta(seconds=2)
DEFAULT_RETENTION = timedelta(hours=24)


def records_table(metadata: MetaData) -> Table:
    """The records table, defined on a service's metadata (its migration creates it)."""
    return Table(
        TABLE,
        metadata,
        Column("scope", String(SCOPE_LENGTH), primary_key=True),
        Column("key", String(KEY_LENGTH), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("plan", LargeBinary, nullable=False),
        Column("response", LargeBinary, nullable=True),
        Column("lease_until", UtcDateTime, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("expires_at", UtcDateTime, nullable=False, index=True),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


class IdempotencyRecords:
    """Claims, finishes and releases keys; purges expired records.

    `lease`: how long a claim keeps other attempts out (ABORTED) while its owner works;
    never longer than the owner's own call may run, so a retry after the owner's
    deadline finds the lease lapsed and resumes.
    """

    def __init__(
        self,
        database: ShardedDatabase,
        table: Table,
        *,
        lease: timedelta = DEFAULT_LEASE,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if lease <= timedelta(0) or retention <= lease:
            raise ValueError(f"need 0 < lease < retention, got lease={lease}, {retention=}")
        self._database = database
        self._table = table
        self._lease = lease
        self._retention = retention
        self._clock = clock

    async def claim(self, scope: str, key: str, request_hash: str, plan: bytes) -> Decision:
        """What this attempt of the request should do (`decisions`), recorded at once:
        a Fresh or Resume attempt holds the lease when this returns."""
        now = self._clock()
        lease_until = now + self._lease_for_this_call()
        new = {  # a record of this attempt, holding the lease
            "request_hash": request_hash,
            "state": PENDING,
            "plan": plan,
            "lease_until": lease_until,
            "created_at": now,
            "expires_at": now + self._retention,
        }
        table = self._table
        while True:
            async with self._shard(key).write() as session:
                inserted = await session.scalar(
                    insert_for(session)(table)
                    .values(scope=scope, key=key, **new)
                    .on_conflict_do_nothing()
                    .returning(table.c.key)
                )
                if inserted is not None:
                    return Fresh(plan)
                row = (
                    await session.execute(
                        select(table).where(*self._is(scope, key)).with_for_update()
                    )
                ).one_or_none()
                if row is None:
                    continue  # purged between the two statements: insert again
                decision = decide(_record(row), request_hash, plan, now)
                if isinstance(decision, Fresh):  # expired: the key starts over
                    await session.execute(
                        update(table).where(*self._is(scope, key)).values(response=None, **new)
                    )
                elif isinstance(decision, Resume):
                    await session.execute(
                        update(table).where(*self._is(scope, key)).values(lease_until=lease_until)
                    )
                return decision

    async def finish(self, scope: str, key: str, request_hash: str, response: bytes) -> None:
        """Record the answer: from now on every repeat gets it."""
        async with self._shard(key).write() as session:
            await session.execute(
                update(self._table)
                .where(*self._is(scope, key), self._table.c.request_hash == request_hash)
                .values(state=DONE, response=response, lease_until=self._clock())
            )

    async def release(self, scope: str, key: str, request_hash: str) -> None:
        """End the lease of an attempt that failed: the next attempt resumes at once."""
        table = self._table
        async with self._shard(key).write() as session:
            await session.execute(
                update(table)
                .where(
                    *self._is(scope, key),
                    table.c.request_hash == request_hash,
                    table.c.state == PENDING,
                )
                .values(lease_until=self._clock())
            )

    async def purge(self, now: datetime, batch: int) -> int:
        """Delete the records expired at `now`, on every shard, `batch` rows a transaction."""
        table, purged = self._table, 0
        expired = select(table.c.scope, table.c.key).where(table.c.expires_at <= now).limit(batch)
        for shard in self._database.shards:
            while True:
                async with shard.write() as session:
                    result = await session.execute(
                        delete(table).where(tuple_(table.c.scope, table.c.key).in_(expired))
                    )
                deleted = int(getattr(result, "rowcount", 0) or 0)
                purged += deleted
                if deleted < batch:
                    break
        return purged

    def _shard(self, key: str) -> Database:
        return self._database.for_key(key)

    def _is(self, scope: str, key: str) -> tuple[Any, Any]:
        return self._table.c.scope == scope, self._table.c.key == key

    def _lease_for_this_call(self) -> timedelta:
        left = deadlines.remaining_incoming()
        if left is None:
            return self._lease
        return max(timedelta(0), min(self._lease, timedelta(seconds=left)))


def _record(row: Row[Any]) -> Record:
    return Record(
        request_hash=row.request_hash,
        state=row.state,
        plan=bytes(row.plan),
        response=None if row.response is None else bytes(row.response),
        lease_until=row.lease_until,
        expires_at=row.expires_at,
    )
