"""Click events: what Resolve publishes to the queue, and how they leave the request.

A redirect must not wait for analytics, so `ClickPublisher` sends each click in the
background and Resolve answers at once. The price is explicit: a click accepted in the
moment before a crash may be lost, and under overload (more than `max_pending` clicks
waiting for Redis) new clicks are dropped and counted as dropped rather than slowing
redirects down. Once in the stream, a click is delivered at least once and counted once
(see `store.record_clicks`), in batches (`worker.py`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from blueprint.infra.queue import Priority, WorkQueue
from blueprint.mesh.resilience import deadlines

log = logging.getLogger(__name__)

CLICK_STREAM = "shortener-clicks"
CLICK_GROUP = "shortener-stats"


@dataclass(frozen=True, slots=True)
class Click:
    code: str
    link_id: int  # the link clicked, should its code later name another one
    at: datetime

    @property
    def day(self) -> date:
        return self.at.astimezone(UTC).date()

    def payload(self) -> dict[str, Any]:
        return {"code": self.code, "link_id": self.link_id, "at": self.at.isoformat()}

    @classmethod
    def from_payload(cls, payload: Any) -> Click:
        """The click in a message; ValueError if the payload is not one."""
        if not isinstance(payload, dict):
            raise ValueError(f"click payload must be an object, got {type(payload).__name__}")
        code, link_id, at = payload.get("code"), payload.get("link_id"), payload.get("at")
        if not isinstance(code, str) or not code:
            raise ValueError("click payload has no code")
        if isinstance(link_id, bool) or not isinstance(link_id, int):
            raise ValueError("click payload has no integer link_id")
        if not isinstance(at, str):
            raise ValueError("click payload has no time")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("click time has no time zone")
        return cls(code, link_id, when)


def message_id(code: str, request_id: str) -> str:
    """The queue message id: from the caller's request id, so a retried Resolve is one
    message (counted once), or random, so every call counts."""
    return f"click:{code}:{request_id}" if request_id else uuid.uuid4().hex


class ClickPublisher:
    def __init__(
        self,
        queue: WorkQueue,
        *,
        max_pending: int = 10_000,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._queue = queue
        self._max_pending = max_pending
        self._on_drop = on_drop
        self._pending: set[asyncio.Task[str]] = set()
        self.dropped = 0

    def publish(self, click: Click, message_id: str) -> None:
        """Send `click` in the background; dropped (and counted) when too many wait."""
        if len(self._pending) >= self._max_pending:
            self._drop("too many clicks waiting for the queue")
            return
        task = asyncio.create_task(
            self._queue.publish(
                CLICK_STREAM, click.payload(), priority=Priority.LOW, message_id=message_id
            ),
            context=deadlines.without_incoming(),  # outlives the Resolve that counted it
        )
        self._pending.add(task)
        task.add_done_callback(self._done)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Wait for every click published so far to reach the queue (or fail)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Let pending clicks reach Redis for up to `timeout`, then give up on the rest."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("clicks not published at shutdown", extra={"lost": len(self._pending)})
            for task in self._pending:
                task.cancel()

    def _done(self, task: asyncio.Task[str]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._drop(f"publish failed: {task.exception()}")

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop()
        # The first, then one line per thousand: an outage must not flood the log.
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("click dropped (%d so far): %s", self.dropped, why)
