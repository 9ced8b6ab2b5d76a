"""How deep a queue is, sampled from Redis into the worker's gauges.

Consumers count what they do; what waits (ready backlog, pending, delayed retries, dead
letters, the oldest message's age) lives in Redis and is read here now and then. Every
worker of a queue samples the same keys, so dashboards take the max over workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError

from blueprint.infra.queue.message import Envelope, MalformedEntry, Priority
from blueprint.infra.queue.metrics import QueueMetrics
from blueprint.infra.queue.queue import WorkQueue

log = logging.getLogger(__name__)


async def sample(queue: WorkQueue, stream: str, group: str, metrics: QueueMetrics) -> None:
    keys = queue.keys(stream)
    backlog = await queue.backlog(stream)
    for priority, count in backlog.items():
        metrics.backlog.labels(stream, priority.name.lower()).set(count)
    metrics.pending.labels(stream, group).set(await queue.pending(stream, group))
    metrics.delayed.labels(stream).set(await queue.redis.zcard(keys.delayed))
    metrics.dead_letters.labels(stream).set(await queue.redis.xlen(keys.dead))
    oldest_ms = None
    for priority in Priority:
        first: Any = await queue.redis.xrange(keys.priority(priority), count=1)
        for _, fields in first:
            try:
                published = Envelope.from_fields(fields).published_at_ms
            except MalformedEntry:
                continue
            oldest_ms = published if oldest_ms is None else min(oldest_ms, published)
    age = 0.0 if oldest_ms is None else max(0.0, (queue.now_ms() - oldest_ms) / 1000)
    metrics.oldest_age.labels(stream).set(age)


async def sample_forever(
    queue: WorkQueue,
    stream: str,
    group: str,
    metrics: QueueMetrics,
    stop: asyncio.Event,
    *,
    interval_seconds: float,
) -> None:
    if interval_seconds <= 0:
        raise ValueError("interval_seconds must be > 0")
    while not stop.is_set():
        try:
            await sample(queue, stream, group, metrics)
        except RedisError as exc:  # the consumers report the outage; the gauges just wait
            log.info("queue depth not sampled", extra={"stream": stream, "error": str(exc)})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_seconds):
                await stop.wait()
