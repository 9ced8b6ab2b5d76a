"""One consumer of a work queue: at-least-once, acknowledged only after the handler commits.

Each delivery goes through:

1. take: first any message a crashed consumer left (XAUTOCLAIM of entries idle longer
   than the visibility timeout), then new ones, HIGH before NORMAL before LOW.
2. duplicate check: if this group already committed the message id, acknowledge it
   without running the handler.
3. run the handler, renewing our claim every third of the visibility timeout (an XCLAIM
   of our own entry resets its idle time) so a slow handler is not taken over while
   its process lives; a crashed process stops renewing, and the entry is claimed.
4. outcome, each one atomic (MULTI) with the acknowledgement:
   - success: write the processed marker, XACK, XDEL;
   - failure: re-enqueue into the delayed set with the next due time (exponential
     backoff) and the delivery count so far, XACK, XDEL; a scheduler loop moves it
     back to its ready stream when due (`scheduler.py`);
   - failure on the last allowed delivery, a `PermanentError`, or an entry that cannot
     be read: XADD to the dead-letter stream with the error and attempt count, XACK, XDEL.

Idempotency, honestly: the handler's own commit (say, a database transaction) and our
marker are two systems, so they cannot be one atomic step. If the process dies after
the handler committed and before the marker is written, the message is delivered
again and the handler runs twice. The marker removes every other duplicate (a crash
after the marker, a takeover racing a slow consumer that finished first, a publisher
sending one message id twice). Handlers therefore receive `Message.id` and should make
their side effect conditional on it where a second run would be wrong: e.g. insert the
id into a processed-ids table in the same transaction as the change, or use an
idempotent write (SET, upsert) rather than an increment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError
from redis.typing import KeyT, StreamIdT

from blueprint.infra.queue.keys import check_name
from blueprint.infra.queue.message import Envelope, MalformedEntry, Message, Priority
from blueprint.infra.queue.metrics import QueueMetrics
from blueprint.infra.queue.outcomes import ERROR_LIMIT, Delivery, Outcomes
from blueprint.infra.queue.queue import WorkQueue
from blueprint.infra.queue.retry import RetryPolicy

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]

# Resets the idle time of an entry we still own; never takes one back from a claimant.
# KEYS: stream. ARGV: group, entry id, consumer.
_KEEP_ALIVE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if p[1] == nil or p[1][2] ~= ARGV[3] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""


class PermanentError(Exception):
    """Raised by a handler for a message that can never succeed: dead-lettered at once."""


@dataclass(frozen=True)
class ConsumerOptions:
    visibility_timeout_seconds: float = 30.0  # idle this long: its consumer is presumed dead
    block_seconds: float = 1.0  # a blocked read returns this often to notice a stop
    processed_ttl_seconds: float = 86_400.0  # how long a redelivery is recognised
    handler_timeout_seconds: float | None = 300.0  # a hung handler counts as a failure
    dead_letter_maxlen: int = 100_000  # approximate; the oldest dead letters go first

    def __post_init__(self) -> None:
        checks = [
            (self.visibility_timeout_seconds >= 0.05, "visibility_timeout_seconds must be >= 0.05"),
            (0 <= self.block_seconds <= 60, "block_seconds must be in [0, 60]"),
            (self.processed_ttl_seconds > 0, "processed_ttl_seconds must be > 0"),
            (
                self.handler_timeout_seconds is None or self.handler_timeout_seconds > 0,
                "handler_timeout_seconds must be > 0 or None",
            ),
            (self.dead_letter_maxlen >= 1, "dead_letter_maxlen must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ConsumerOptions: {message}")


class Consumer:
    def __init__(
        self,
        queue: WorkQueue,
        stream: str,
        group: str,
        name: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        options: ConsumerOptions | None = None,
        rng: random.Random | None = None,
        metrics: QueueMetrics | None = None,
    ) -> None:
        self.queue = queue
        self.stream = stream
        self.group = check_name("group name", group)
        self.name = check_name("consumer name", name)
        self._keys = queue.keys(stream)
        self._handler = handler
        self.retry = retry or RetryPolicy()
        self.options = options or ConsumerOptions()
        self._rng = rng or random.Random()
        self._metrics = metrics
        self._redis = queue.redis
        self._keep_alive_script = self._redis.register_script(_KEEP_ALIVE)
        self._outcomes = Outcomes(
            self._redis,
            self._keys,
            self.group,
            self.name,
            now_ms=queue.now_ms,
            processed_ttl_seconds=self.options.processed_ttl_seconds,
            dead_letter_maxlen=self.options.dead_letter_maxlen,
            metrics=metrics,
        )
        self._held: deque[Delivery] = deque()  # read together, handled in priority order
        self._claim_cursors = {key: "0-0" for key in self._keys.streams}
        self._next_claim_at = 0.0

    # -- loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Handle messages until `stop` is set; the message in hand is always finished."""
        backoff = 0.1
        while not stop.is_set() or self._held:
            try:
                await self.run_once(read_new=not stop.is_set())
                backoff = 0.1
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.queue.ensure_group(self.stream, self.group)  # its stream was deleted
            except RedisError as exc:
                log.warning("queue read failed; retrying", extra=self._where(error=str(exc)))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):  # wait_for may eat a cancel
                        await stop.wait()
                backoff = min(backoff * 2, 5.0)

    async def run_once(self, *, block_seconds: float | None = None, read_new: bool = True) -> bool:
        """Take and handle at most one message; False when there was none."""
        if self._held:
            delivery: Delivery | None = self._held.popleft()
        elif read_new:
            block = self.options.block_seconds if block_seconds is None else block_seconds
            delivery = await self._take(block)
        else:
            return False
        if delivery is None:
            return False
        await self._handle(delivery)
        return True

    async def forget(self) -> None:
        """Leave the group if we hold nothing, so stopped consumers do not pile up."""
        for key in self._keys.streams:
            try:
                mine = await self._redis.xpending_range(
                    key, self.group, "-", "+", 1, consumername=self.name
                )
                if not mine:
                    await self._redis.xgroup_delconsumer(key, self.group, self.name)
            except RedisError as exc:
                log.info("could not leave the consumer group", extra=self._where(error=str(exc)))

    # -- taking -----------------------------------------------------------------------

    async def _take(self, block_seconds: float) -> Delivery | None:
        claimed = await self._claim()
        if claimed is not None:
            return claimed
        for priority in Priority:  # non-blocking, highest first: strict priority
            found = await self._read({self._keys.priority(priority): ">"}, block_ms=None)
            if found:
                return found
        if block_seconds <= 0:
            return None
        return await self._read(
            {key: ">" for key in self._keys.streams}, block_ms=max(1, int(block_seconds * 1000))
        )

    async def _read(self, streams: dict[KeyT, StreamIdT], block_ms: int | None) -> Delivery | None:
        reply: Any = await self._redis.xreadgroup(
            self.group,
            self.name,
            streams,
            count=1,
            block=block_ms,
        )
        deliveries = [
            Delivery(self._priority_of(key), entry_id.decode(), fields, 1)
            for key, entries in reply or []
            for entry_id, fields in entries
        ]
        if not deliveries:
            return None
        deliveries.sort(key=lambda d: d.priority)
        self._held.extend(deliveries[1:])
        return deliveries[0]

    async def _claim(self) -> Delivery | None:
        """One message idle past the visibility timeout, taken over from its consumer."""
        if time.monotonic() < self._next_claim_at:
            return None
        idle_ms = int(self.options.visibility_timeout_seconds * 1000)
        for priority in Priority:
            key = self._keys.priority(priority)
            reply = await self._redis.xautoclaim(
                key, self.group, self.name, idle_ms, start_id=self._claim_cursors[key], count=1
            )
            self._claim_cursors[key] = reply[0].decode()
            for entry_id, fields in reply[1]:
                if entry_id is None:
                    continue
                entry = entry_id.decode()
                pending = await self._redis.xpending_range(key, self.group, entry, entry, 1)
                delivered = int(pending[0]["times_delivered"]) if pending else 2
                self._outcomes.count("claimed")
                log.warning(
                    "took over a message from an idle consumer",
                    extra=self._where(entry_id=entry, delivered=delivered),
                )
                return Delivery(priority, entry, fields, delivered)
        # Nothing to take over: look again after a fraction of the timeout, not every read.
        self._next_claim_at = time.monotonic() + self.options.visibility_timeout_seconds / 4
        return None

    def _priority_of(self, key: bytes | str) -> Priority:
        name = key.decode() if isinstance(key, bytes) else key
        return Priority(self._keys.streams.index(name))

    # -- handling ---------------------------------------------------------------------

    async def _handle(self, d: Delivery) -> None:
        try:
            envelope = Envelope.from_fields(d.fields)
        except MalformedEntry as exc:
            await self._outcomes.dead_letter(d, None, str(exc), attempts=d.delivered - 1)
            return
        delivery = envelope.prior + d.delivered
        if delivery > self.retry.max_deliveries:
            reason = f"delivered {delivery - 1} times without an outcome (consumers crashed)"
            await self._outcomes.dead_letter(d, envelope, reason, attempts=delivery - 1)
            return
        if await self._redis.exists(self._keys.processed(self.group, envelope.mid)):
            await self._outcomes.duplicate(d)
            return
        try:
            payload = json.loads(envelope.payload)
        except ValueError as exc:
            await self._outcomes.dead_letter(d, envelope, f"payload is not JSON: {exc}", attempts=0)
            return
        message = Message(
            id=envelope.mid,
            payload=payload,
            attempt=delivery,
            stream=self.stream,
            priority=d.priority,
            entry_id=d.entry_id,
            published_at=envelope.published_at_ms / 1000,
        )
        error = await self._run_handler(message, d)
        if error is None:
            await self._outcomes.commit(d, envelope)
        elif isinstance(error, PermanentError) or self.retry.exhausted(delivery):
            await self._outcomes.dead_letter(d, envelope, _describe(error), attempts=delivery)
        else:
            delay = self.retry.delay(delivery, self._rng)
            await self._outcomes.retry(d, envelope, delivery, delay, _describe(error))

    async def _run_handler(self, message: Message, d: Delivery) -> Exception | None:
        keep_alive = asyncio.create_task(self._keep_alive(d))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.options.handler_timeout_seconds):
                await self._handler(message)
        except Exception as exc:  # the handler's failure is data here; CancelledError is not
            self._outcomes.count("failed")
            return exc
        finally:
            keep_alive.cancel()
            if self._metrics is not None:
                self._metrics.observe(time.perf_counter() - started, self.stream, self.group)
        return None

    async def _keep_alive(self, d: Delivery) -> None:
        key = self._keys.priority(d.priority)
        while True:
            await asyncio.sleep(self.options.visibility_timeout_seconds / 3)
            try:
                still_ours = await self._keep_alive_script(
                    keys=[key], args=[self.group, d.entry_id, self.name]
                )
            except RedisError as exc:
                log.warning("could not renew a message claim", extra=self._where(error=str(exc)))
                continue
            if not still_ours:
                log.warning(
                    "another consumer took over a message still being handled",
                    extra=self._where(entry_id=d.entry_id),
                )
                return

    def _where(self, **fields: object) -> dict[str, object]:
        return {"stream": self.stream, "group": self.group, "consumer": self.name, **fields}


def _describe(error: Exception) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return "TimeoutError: the handler exceeded its timeout"
    return f"{type(error).__name__}: {error}"[:ERROR_LIMIT]
