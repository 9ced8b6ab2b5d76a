"""The producer's side of a work queue, plus what the consumers' runtime needs shared.

A queue named S is a few Redis keys (see `keys.py`): three ready streams (one per
priority), a sorted set of delayed retries scored by due time, and a dead-letter
stream. Consumers form a consumer group per ready stream. Acknowledged entries are
deleted with their acknowledgement, so a ready stream's length is its backlog; the
price is that one stream serves one group (competing consumers). Fan-out to several
independent readers is what `Events` (pub/sub) or one queue per reader is for.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from blueprint.infra.queue.keys import QueueKeys, check_name
from blueprint.infra.queue.message import Envelope, Priority, encode_payload

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
_MESSAGE_ID_LIMIT = 200

# Moves due retries back to their ready stream; atomic, so many workers may run it.
# KEYS: delayed zset, then the ready streams in Priority order. ARGV: now ms, limit.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local m = cjson.decode(member)
  redis.call('XADD', KEYS[2 + tonumber(m.p)], '*', 'mid', m.mid, 'payload', m.payload,
             'prior', m.prior, 'published_at', m.published_at, 'error', m.error)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    message_id: str
    payload: Any
    error: str
    attempts: int
    group: str
    consumer: str
    priority: Priority
    failed_at: float  # Unix seconds


class WorkQueue:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("WorkQueue needs a Redis client with decode_responses=False")
        QueueKeys(prefix, "check")  # validates the prefix once, here
        if max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be >= 1")
        self.redis = redis
        self.prefix = prefix
        self.clock = clock  # wall time: due times are shared between processes
        self.max_payload_bytes = max_payload_bytes
        self._promote = redis.register_script(_PROMOTE)

    def keys(self, stream: str) -> QueueKeys:
        return QueueKeys(self.prefix, stream)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def publish(
        self,
        stream: str,
        payload: Any,
        *,
        priority: Priority = Priority.NORMAL,
        message_id: str | None = None,
        delay_seconds: float = 0.0,
    ) -> str:
        """Enqueue `payload` (any JSON value); returns the message id.

        Pass `message_id` to make publishing idempotent too: two publishes with one id
        are two entries, but once one is processed the other is acknowledged unrun.
        """
        keys = self.keys(stream)
        priority = Priority(priority)
        mid = message_id if message_id is not None else uuid.uuid4().hex
        if not 1 <= len(mid) <= _MESSAGE_ID_LIMIT or not mid.isprintable() or " " in mid:
            raise ValueError(
                f"message_id must be 1-{_MESSAGE_ID_LIMIT} printable characters without spaces"
            )
        if not 0 <= delay_seconds <= 365 * 86400:
            raise ValueError(f"delay_seconds must be in [0, one year], got {delay_seconds}")
        now = self.now_ms()
        envelope = Envelope(mid, encode_payload(payload, self.max_payload_bytes), 0, now)
        if delay_seconds > 0:
            due = now + int(delay_seconds * 1000)
            await self.redis.zadd(keys.delayed, {envelope.delayed_member(priority): due})
        else:
            await self.redis.xadd(keys.priority(priority), envelope.fields())  # type: ignore[arg-type]
        return mid

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the consumer group on every ready stream; existing groups are kept."""
        check_name("group name", group)
        for key in self.keys(stream).streams:
            try:
                # From the start ("0"): entries published before the group existed count.
                await self.redis.xgroup_create(key, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def promote_due(self, stream: str, *, limit: int = 100) -> int:
        """Move retries whose due time has come back to their ready stream."""
        keys = self.keys(stream)
        moved: int = await self._promote(
            keys=[keys.delayed, *keys.streams], args=[self.now_ms(), limit]
        )
        return moved

    async def delayed(self, stream: str) -> list[tuple[dict[str, str], int]]:
        """Scheduled retries, earliest first: (entry fields, due time in Unix ms)."""
        rows: Any = await self.redis.zrange(self.keys(stream).delayed, 0, -1, withscores=True)
        return [(json.loads(member), int(score)) for member, score in rows]

    async def backlog(self, stream: str) -> dict[Priority, int]:
        """Ready entries per priority (delivered but unacknowledged ones included)."""
        keys = self.keys(stream)
        return {p: int(await self.redis.xlen(keys.priority(p))) for p in Priority}

    async def pending(self, stream: str, group: str) -> int:
        """Entries delivered to `group` and not yet acknowledged, over all priorities."""
        total = 0
        for key in self.keys(stream).streams:
            try:
                summary: Any = await self.redis.xpending(key, group)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    continue
                raise
            total += int(summary["pending"])
        return total

    async def dead_letters(self, stream: str, count: int = 100) -> list[DeadLetter]:
        rows: Any = await self.redis.xrange(self.keys(stream).dead, count=count)
        letters = []
        for entry_id, raw in rows:
            f = {k.decode(): v.decode() for k, v in raw.items()}
            try:
                payload = json.loads(f["payload"])
            except ValueError:
                payload = f["payload"]  # kept as text: it may be why it died
            letters.append(
                DeadLetter(
                    entry_id=entry_id.decode(),
                    message_id=f["mid"],
                    payload=payload,
                    error=f["error"],
                    attempts=int(f["attempts"]),
                    group=f["group"],
                    consumer=f["consumer"],
                    priority=Priority(int(f["priority"])),
                    failed_at=int(f["failed_at"]) / 1000,
                )
            )
        return letters
