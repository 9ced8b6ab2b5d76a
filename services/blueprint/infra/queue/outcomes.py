"""How a delivery ends. Each outcome is one MULTI together with the acknowledgement
(XACK, and XDEL so the stream holds only the backlog): a message is never acknowledged
without its outcome written, nor its outcome written without the acknowledgement. The
same MULTI frees the message id's run (`runs.py`), so a consumer waiting on it sees the
outcome and the free run key together."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from blueprint.infra.queue.keys import QueueKeys
from blueprint.infra.queue.message import Envelope, Message, Priority
from blueprint.infra.queue.metrics import Outcome, QueueMetrics
from blueprint.infra.queue.runs import Runs

log = logging.getLogger(__name__)

ERROR_LIMIT = 2000  # characters of an error kept with a retry or dead letter


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to this consumer."""

    priority: Priority
    entry_id: str
    fields: dict[bytes, bytes] | None
    delivered: int  # this entry's delivery count in the group


@dataclass(frozen=True)
class Ready:
    """A delivery admitted to its handler: the entry, as read, and as handed over."""

    delivery: Delivery
    envelope: Envelope
    message: Message


class Outcomes:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: QueueKeys,
        group: str,
        consumer: str,
        runs: Runs,
        *,
        now_ms: Callable[[], int],
        processed_ttl_seconds: float,
        dead_letter_maxlen: int,
        metrics: QueueMetrics | None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._consumer = consumer
        self._runs = runs
        self._now_ms = now_ms
        self._processed_ttl_ms = max(1, int(processed_ttl_seconds * 1000))
        self._dead_letter_maxlen = dead_letter_maxlen
        self._metrics = metrics

    async def duplicates(self, deliveries: Sequence[Delivery]) -> None:
        """Already committed by this group: acknowledge without running anything."""
        if not deliveries:
            return
        async with self._redis.pipeline(transaction=True) as tx:
            self._acknowledge(tx, deliveries)
            await tx.execute()
        self.count("duplicate", len(deliveries))

    async def commit_many(self, done: Sequence[tuple[Delivery, Envelope]]) -> None:
        """The handler returned: mark the message ids processed, acknowledge; one MULTI
        for a whole batch."""
        async with self._redis.pipeline(transaction=True) as tx:
            for _, envelope in done:
                marker = self._keys.processed(self._group, envelope.mid)
                tx.set(marker, b"1", px=self._processed_ttl_ms)
            await self._runs.release(tx, [envelope.mid for _, envelope in done])
            self._acknowledge(tx, [d for d, _ in done])
            await tx.execute()
        self.count("processed", len(done))
        if self._metrics is not None:
            now_ms = self._now_ms()
            for _, envelope in done:
                seconds = (now_ms - envelope.published_at_ms) / 1000
                self._metrics.lag(seconds, self._keys.stream, self._group)

    async def retry(
        self, d: Delivery, envelope: Envelope, delivery: int, delay_seconds: float, error: str
    ) -> None:
        """Into the delayed set, due after `delay_seconds`, carrying the deliveries so far."""
        due_ms = self._now_ms() + int(delay_seconds * 1000)
        again = Envelope(
            envelope.mid, envelope.payload, delivery, envelope.published_at_ms, error[:ERROR_LIMIT]
        )
        async with self._redis.pipeline(transaction=True) as tx:
            tx.zadd(self._keys.delayed, {again.delayed_member(d.priority): due_ms})
            await self._runs.release(tx, [envelope.mid])
            self._acknowledge(tx, [d])
            await tx.execute()
        self.count("retried")
        log.warning(
            "message failed; retry scheduled",
            extra=self._where(
                message_id=envelope.mid,
                attempt=delivery,
                retry_in_seconds=delay_seconds,
                error=error[:ERROR_LIMIT],
            ),
        )

    async def dead_letter(
        self, d: Delivery, envelope: Envelope | None, error: str, *, attempts: int
    ) -> None:
        """Into the dead-letter stream with the error and attempt count, for a human."""
        raw = {k.decode(errors="replace"): v for k, v in (d.fields or {}).items()}
        letter: dict[str, str | bytes] = {
            "mid": envelope.mid if envelope else raw.get("mid", b""),
            "payload": envelope.payload if envelope else raw.get("payload", b""),
            "published_at": str(envelope.published_at_ms) if envelope else "0",
            "error": error[:ERROR_LIMIT],
            "attempts": str(attempts),
            "group": self._group,
            "consumer": self._consumer,
            "priority": str(int(d.priority)),
            "failed_at": str(self._now_ms()),
        }
        async with self._redis.pipeline(transaction=True) as tx:
            tx.xadd(
                self._keys.dead,
                letter,  # type: ignore[arg-type]
                maxlen=self._dead_letter_maxlen,
                approximate=True,
            )
            if envelope is not None:
                await self._runs.release(tx, [envelope.mid])
            self._acknowledge(tx, [d])
            await tx.execute()
        self.count("dead_lettered")
        log.error(
            "message dead-lettered",
            extra=self._where(message_id=letter["mid"], attempts=attempts, error=letter["error"]),
        )

    def count(self, outcome: Outcome, messages: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.count(outcome, self._keys.stream, self._group, messages)

    def count_split(self) -> None:
        if self._metrics is not None:
            self._metrics.split(self._keys.stream, self._group)

    def _acknowledge(self, tx: aioredis.client.Pipeline, deliveries: Sequence[Delivery]) -> None:
        by_key: dict[str, list[str]] = {}
        for d in deliveries:
            by_key.setdefault(self._keys.priority(d.priority), []).append(d.entry_id)
        for key, entry_ids in by_key.items():
            tx.xack(key, self._group, *entry_ids)
            tx.xdel(key, *entry_ids)

    def _where(self, **fields: object) -> dict[str, object]:
        return {
            "stream": self._keys.stream,
            "group": self._group,
            "consumer": self._consumer,
            **fields,
        }
