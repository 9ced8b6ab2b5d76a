"""`blueprint work shortener-clicks`: counts the clicks Resolve publishes.

Each message is one click. The worker takes them in batches (BLUEPRINT_QUEUE_BATCH_SIZE,
gathered for at most BLUEPRINT_QUEUE_BATCH_MAX_WAIT_SECONDS) and counts a batch in one
transaction per shard: the message ids go in as receipts in the same transaction as the
counts (`store.record_clicks`), so a message delivered twice (a consumer killed after
its commit, a takeover, a failed batch split and run again) is counted once. A payload
that is not a click can never succeed: alone, it is dead-lettered at once; in a batch,
the batch fails and is split until it is alone (`infra.queue.consumer`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from blueprint.infra.queue import BatchHandler, Message, PermanentError
from blueprint.infra.queue.registry import HandlerSpec, WorkerContext
from blueprint.infra.sql import ShardedDatabase
from blueprint.shortener.clicks import CLICK_GROUP, CLICK_STREAM, Click
from blueprint.shortener.records import ReceivedClick, utc_now
from blueprint.shortener.store import ShortenerStore

SERVICE = "shortener"


class ClickCounter:
    """The batch handler: every click of a batch counted, or none (it raises)."""

    def __init__(self, store: ShortenerStore) -> None:
        self._store = store

    async def handle_batch(self, messages: Sequence[Message]) -> None:
        clicks = []
        for message in messages:
            try:
                click = Click.from_payload(message.payload)
            except ValueError as error:
                raise PermanentError(f"message {message.id} is not a click: {error}") from error
            clicks.append(ReceivedClick(message.id, click.code, click.link_id, click.day))
        await self._store.record_clicks(clicks, utc_now())


@asynccontextmanager
async def _handler(context: WorkerContext) -> AsyncIterator[BatchHandler]:
    database = ShardedDatabase.from_settings(context.settings, SERVICE)
    try:
        yield ClickCounter(ShortenerStore(database))
    finally:
        await database.dispose()


SPEC = HandlerSpec(stream=CLICK_STREAM, group=CLICK_GROUP, factory=_handler)
