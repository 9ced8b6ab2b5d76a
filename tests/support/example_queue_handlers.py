"""A queue handler for tests, run by real `blueprint work example` processes.

Its side effects are Redis counters under the worker's BLUEPRINT_REDIS_PREFIX, so a test
can tell what ran where. The payload drives it:

    {"job": "j1", "sleep": 0.5, "hang_first_attempt": false, "fail": false}

- `started` counter: incremented as the handler starts
- sleeps `sleep` seconds; with `hang_first_attempt`, an hour on delivery 1 (a test kills it)
- `fail`: raises RuntimeError every time (a poison message)
- `done` counter: incremented as the handler completes, the side effect that must
  happen exactly once
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blueprint.infra.queue import Handler, Message
from blueprint.infra.queue.registry import HandlerSpec, WorkerContext

STREAM = "example-jobs"
GROUP = "example"
PATH = "support.example_queue_handlers:SPEC"


def started_key(prefix: str, job: str) -> str:
    return f"{prefix}:example:started:{job}"


def done_key(prefix: str, job: str) -> str:
    return f"{prefix}:example:done:{job}"


@asynccontextmanager
async def _handler(context: WorkerContext) -> AsyncIterator[Handler]:
    prefix = context.settings.redis_prefix
    redis = context.redis

    async def handle(message: Message) -> None:
        job = str(message.payload["job"])
        await redis.incr(started_key(prefix, job))
        if message.payload.get("hang_first_attempt") and message.attempt == 1:
            await asyncio.sleep(3600)
        await asyncio.sleep(float(message.payload.get("sleep", 0)))
        if message.payload.get("fail"):
            raise RuntimeError(f"job {job} fails on purpose (attempt {message.attempt})")
        await redis.incr(done_key(prefix, job))

    yield handle


SPEC = HandlerSpec(stream=STREAM, group=GROUP, factory=_handler)
