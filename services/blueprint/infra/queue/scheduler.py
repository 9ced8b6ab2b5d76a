"""The loop that puts due retries back on their ready stream.

Every worker process runs one per queue. The move is one Lua script, so any number
of them can run at once without moving a message twice; more of them only means a
due retry waits less (at most one interval, plus jitter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from redis.exceptions import RedisError

from blueprint.infra.queue.queue import WorkQueue

log = logging.getLogger(__name__)


async def promote_due_forever(
    queue: WorkQueue,
    stream: str,
    stop: asyncio.Event,
    *,
    interval_seconds: float = 0.5,
    rng: random.Random | None = None,
) -> None:
    if interval_seconds <= 0:
        raise ValueError("interval_seconds must be > 0")
    rng = rng or random.Random()
    while not stop.is_set():
        try:
            moved = await queue.promote_due(stream)
        except RedisError as exc:
            log.warning("moving due retries failed", extra={"stream": stream, "error": str(exc)})
            moved = 0
        if moved:
            continue  # a backlog of due retries: keep moving without waiting
        # Jittered, so the workers of a fleet do not all poll in the same instant.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_seconds * (0.5 + rng.random())):
                await stop.wait()
