"""`blueprint work shortener-clicks`: counts the clicks Resolve publishes.

Each message is one click; the handler adds it to the link's count for its UTC day,
writing the message id as a receipt in the same transaction (`store.record_click`), so
a message delivered twice (a consumer that crashed after committing, a takeover) is
counted once. A payload that is not a click can never succeed: dead-lettered at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blueprint.infra.queue import Handler, Message, PermanentError
from blueprint.infra.queue.registry import HandlerSpec, WorkerContext
from blueprint.infra.sql import ShardedDatabase
from blueprint.shortener.clicks import CLICK_GROUP, CLICK_STREAM, Click
from blueprint.shortener.records import utc_now
from blueprint.shortener.store import ShortenerStore

SERVICE = "shortener"


def click_handler(store: ShortenerStore) -> Handler:
    async def handle(message: Message) -> None:
        try:
            click = Click.from_payload(message.payload)
        except ValueError as error:
            raise PermanentError(f"not a click: {error}") from error
        await store.record_click(message.id, click.code, click.link_id, click.day, utc_now())

    return handle


@asynccontextmanager
async def _handler(context: WorkerContext) -> AsyncIterator[Handler]:
    database = ShardedDatabase.from_settings(context.settings, SERVICE)
    try:
        yield click_handler(ShortenerStore(database))
    finally:
        await database.dispose()


SPEC = HandlerSpec(stream=CLICK_STREAM, group=CLICK_GROUP, factory=_handler)
