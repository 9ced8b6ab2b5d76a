"""Events over Redis pub/sub: fire-and-forget, to whoever listens right now.

At-most-once: a subscriber that is away misses what was published meanwhile. Use it
for notifications whose loss a periodic re-read repairs (prices, cache invalidations,
"something changed"); work that must happen goes through a `WorkQueue` instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from blueprint.infra.queue.keys import check_name

log = logging.getLogger(__name__)


class Events:
    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"events prefix must be non-empty without spaces: {prefix!r}")
        self._redis = redis
        self._prefix = prefix

    def channel(self, topic: str) -> str:
        return f"{self._prefix}:events:{check_name('topic', topic)}"

    async def publish(self, topic: str, event: Any) -> int:
        """Send `event` (any JSON value); returns how many subscribers received it."""
        try:
            data = json.dumps(event, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event is not JSON-serializable: {exc}") from exc
        receivers: int = await self._redis.publish(self.channel(topic), data)
        return receivers

    def subscribe(self, *topics: str) -> Subscription:
        """`async with events.subscribe("prices") as sub: async for topic, event in sub: ...`"""
        if not topics:
            raise ValueError("subscribe to at least one topic")
        return Subscription(self._redis.pubsub(), {self.channel(t): t for t in topics})


class Subscription:
    """Subscribed on entry (so nothing published after entering is missed), closed on exit."""

    def __init__(self, pubsub: PubSub, topics: dict[str, str]) -> None:
        self._pubsub = pubsub
        self._topics = topics

    async def __aenter__(self) -> Subscription:
        await self._pubsub.subscribe(*self._topics)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    async def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        async for message in self._pubsub.listen():
            if message.get("type") != "message":
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            try:
                event = json.loads(message["data"])
            except ValueError:
                log.warning("ignoring an event that is not JSON", extra={"channel": name})
                continue
            yield self._topics.get(name, name), event
