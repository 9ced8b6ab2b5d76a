"""One consumer of a work queue: at-least-once, acknowledged only after the handler commits.

Each delivery goes through:

1. take: first any message a crashed consumer left (XAUTOCLAIM of entries idle longer
   than the visibility timeout), then new ones, HIGH before NORMAL before LOW.
2. duplicate check: if this group already committed the message id, acknowledge it
   without running the handler. Otherwise take the id's run (`runs.py`): if another
   consumer, here or in another process, is running that id now (a second entry of it
   reached us meanwhile), wait for its outcome first, then check again.
3. run the handler, renewing our claim every third of the visibility timeout (an XCLAIM
   of our own entry resets its idle time; the id's run key is extended) so a slow
   handler is not taken over while its process lives; a crashed process stops renewing,
   and the entry is claimed.
4. outcome, each one atomic (MULTI) with the acknowledgement and with freeing the run:
   - success: write the processed marker, XACK, XDEL;
   - failure: re-enqueue into the delayed set with the next due time (exponential
     backoff) and the delivery count so far, XACK, XDEL; a scheduler loop moves it
     back to its ready stream when due (`scheduler.py`);
   - failure on the last allowed delivery, a `PermanentError`, or an entry that cannot
     be read: XADD to the dead-letter stream with the error and attempt count, XACK, XDEL.

Batches: a handler that offers `handle_batch` (a `BatchHandler`) is given up to
`batch_size` messages at once, gathered for at most `batch_max_wait_seconds` after the
first arrives, and commits them in one transaction; the batch's markers and
acknowledgements are then one MULTI. A batch whose handler fails is split in two and
each half run again, down to single messages, which take the path above (retry, then
dead letter): one poison message costs about log2(batch) extra runs, never the other
messages' progress. Halves may re-run messages whose effects committed on another shard
or before a crash, so a batch handler keys its effects by message id (below). Two
entries of one message id in a batch are not run together: the second waits for the
first's outcome and is then acknowledged as a duplicate (or run, if the first failed);
an entry whose message id another consumer is running waits, after this turn's batch,
in the same way.

Idempotency, honestly: the handler's own commit (say, a database transaction) and our
marker are two systems, so they cannot be one atomic step. If the process dies after
the handler committed and before the marker is written, the message is delivered
again and the handler runs twice. The marker removes every other duplicate (a crash
after the marker, a takeover racing a slow consumer that finished first, a publisher
sending one message id twice, even when its two entries reach two consumers at once).
The other way a message id runs twice: a process stalled past the visibility timeout,
whose entries and run keys lapse while its handler still runs. Handlers therefore
receive `Message.id` and should make their side effect conditional on it where a second
run would be wrong: e.g. insert the id into a processed-ids table in the same
transaction as the change, or use an idempotent write (SET, upsert) rather than an
increment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from redis.exceptions import RedisError, ResponseError
from redis.typing import KeyT, StreamIdT

from blueprint.infra.queue.keys import check_name
from blueprint.infra.queue.message import Envelope, MalformedEntry, Message, Priority
from blueprint.infra.queue.metrics import QueueMetrics
from blueprint.infra.queue.outcomes import ERROR_LIMIT, Delivery, Outcomes, Ready
from blueprint.infra.queue.queue import WorkQueue
from blueprint.infra.queue.retry import RetryPolicy
from blueprint.infra.queue.runs import Held, Runs, RunState

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]


@runtime_checkable
class BatchHandler(Protocol):
    """Handles many messages in one go (one transaction): all of them, or it raises."""

    async def handle_batch(self, messages: Sequence[Message]) -> None: ...


# Resets the idle time of the entries we still own; never takes one back from a
# claimant. Returns a Held per entry.
# KEYS: stream. ARGV: group, consumer, entry ids...
_KEEP_ALIVE = """
local states = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  local state = 0
  if p[1] ~= nil and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    state = 1
  elseif p[1] ~= nil then
    state = 2
  end
  states[#states + 1] = state
end
return states
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
    # A batch handler's batch: up to this many messages, gathered for at most this long
    # after the first (0: whatever is there at once). Plain handlers take one at a time.
    batch_size: int = 100
    batch_max_wait_seconds: float = 0.05

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
            (1 <= self.batch_size <= 1000, "batch_size must be in [1, 1000]"),
            (
                0 <= self.batch_max_wait_seconds <= 10,
                "batch_max_wait_seconds must be in [0, 10]",
            ),
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
        handler: Handler | BatchHandler,
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
        self._runs = Runs(
            self._redis,
            self._keys,
            self.group,
            self.name,
            life_ms=int(self.options.visibility_timeout_seconds * 1000),
        )
        self._outcomes = Outcomes(
            self._redis,
            self._keys,
            self.group,
            self.name,
            self._runs,
            now_ms=queue.now_ms,
            processed_ttl_seconds=self.options.processed_ttl_seconds,
            dead_letter_maxlen=self.options.dead_letter_maxlen,
            metrics=metrics,
        )
        self._batch_size = self.options.batch_size if isinstance(handler, BatchHandler) else 1
        self._held: deque[Delivery] = deque()  # read together, handled in priority order
        self._claim_cursors = {key: "0-0" for key in self._keys.streams}
        self._next_claim_at = 0.0
        # How often a consumer waiting for another's run of a message id looks again.
        self._wait_poll_seconds = min(0.05, self.options.visibility_timeout_seconds / 10)

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

    async def run_once(self, *, block_seconds: float | None = None, read_new: bool = True) -> int:
        """Take and handle one turn's messages: one, or a batch for a batch handler.
        Returns how many were settled (0, falsy, when there were none); an entry held
        back for the next turn counts then."""
        if self._held:
            deliveries = [
                self._held.popleft() for _ in range(min(self._batch_size, len(self._held)))
            ]
        elif read_new:
            block = self.options.block_seconds if block_seconds is None else block_seconds
            deliveries = await self._take(block)
        else:
            return 0
        if not deliveries:
            return 0
        held = len(self._held)
        if not isinstance(self._handler, BatchHandler):
            deliveries = deliveries[:1]  # a plain handler's turn takes one
        await self._handle(deliveries)
        return len(deliveries) - (len(self._held) - held)

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

    async def _take(self, block_seconds: float) -> list[Delivery]:
        """Up to a batch: taken over from crashed consumers first, then new, by priority."""
        size = self._batch_size
        taken = await self._claim(size)
        if taken:
            return taken
        for priority in Priority:  # non-blocking, highest first: strict priority
            taken += await self._read({self._keys.priority(priority): ">"}, size - len(taken))
            if len(taken) >= size:
                return taken
        if not taken and block_seconds > 0:
            taken = await self._read(self._all_new(), size, block_seconds)
        if taken and size > 1:
            # A batch that is not full waits a moment for more: fewer, larger transactions.
            deadline = time.monotonic() + self.options.batch_max_wait_seconds
            while len(taken) < size and (left := deadline - time.monotonic()) > 0:
                more = await self._read(self._all_new(), size - len(taken), left)
                if not more:
                    break
                taken += more
        taken.sort(key=lambda d: d.priority)
        return taken

    def _all_new(self) -> dict[KeyT, StreamIdT]:
        return {key: ">" for key in self._keys.streams}

    async def _read(
        self, streams: dict[KeyT, StreamIdT], count: int, block_seconds: float | None = None
    ) -> list[Delivery]:
        """At most `count` entries; more read at once (one per stream) are held for later."""
        reply: Any = await self._redis.xreadgroup(
            self.group,
            self.name,
            streams,
            count=count,
            block=None if block_seconds is None else max(1, int(block_seconds * 1000)),
        )
        deliveries = [
            Delivery(self._priority_of(key), entry_id.decode(), fields, 1)
            for key, entries in reply or []
            for entry_id, fields in entries
        ]
        deliveries.sort(key=lambda d: d.priority)
        self._held.extend(deliveries[count:])
        return deliveries[:count]

    async def _claim(self, count: int) -> list[Delivery]:
        """Up to `count` messages idle past the visibility timeout, taken over from their
        consumer."""
        if time.monotonic() < self._next_claim_at:
            return []
        idle_ms = int(self.options.visibility_timeout_seconds * 1000)
        claimed: list[Delivery] = []
        for priority in Priority:
            key = self._keys.priority(priority)
            reply = await self._redis.xautoclaim(
                key,
                self.group,
                self.name,
                idle_ms,
                start_id=self._claim_cursors[key],
                count=count - len(claimed),
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
                claimed.append(Delivery(priority, entry, fields, delivered))
            if len(claimed) >= count:
                break
        if not claimed:
            # Nothing to take over: look again after a fraction of the timeout, not every read.
            self._next_claim_at = time.monotonic() + self.options.visibility_timeout_seconds / 4
        return claimed

    def _priority_of(self, key: bytes | str) -> Priority:
        name = key.decode() if isinstance(key, bytes) else key
        return Priority(self._keys.streams.index(name))

    # -- handling ---------------------------------------------------------------------

    async def _handle(self, deliveries: list[Delivery]) -> None:
        """Run what this turn admits; then what other consumers were running, once their
        outcomes are known (each a duplicate by then, or ours to run if theirs failed)."""
        while deliveries:
            ready, busy = await self._admit(deliveries)
            if ready:
                # Kept for the whole batch, halves included: a half that waits for the
                # other half's runs is not taken over meanwhile.
                async with self._claims_kept([r.delivery for r in ready], ready):
                    await self._run_batch(ready)
            # Waited for only now, holding no run of our own: two consumers each waiting
            # for the other's run cannot happen.
            deliveries = await self._wait_for_others(busy)

    @contextlib.asynccontextmanager
    async def _claims_kept(
        self, deliveries: list[Delivery], running: list[Ready]
    ) -> AsyncIterator[None]:
        keep_alive = asyncio.create_task(
            self._keep_alive(deliveries, [r.envelope.mid for r in running])
        )
        try:
            yield
        finally:
            keep_alive.cancel()

    async def _wait_for_others(self, busy: list[tuple[Delivery, str]]) -> list[Delivery]:
        """Wait until the message ids other consumers were running have their outcomes;
        returns the deliveries, to be admitted again."""
        if not busy:
            return []
        mids = [mid for _, mid in busy]
        log.info(
            "another consumer is running this message id; waiting for its outcome",
            extra=self._where(message_ids=mids[:10], waiting=len(mids)),
        )
        deliveries = [d for d, _ in busy]
        async with self._claims_kept(deliveries, []):
            # Polled: the outcome may come from another process, which signals nothing.
            while True:
                if await self._runs.settled(mids):
                    break
                await asyncio.sleep(self._wait_poll_seconds)
        return deliveries

    async def _admit(
        self, deliveries: list[Delivery]
    ) -> tuple[list[Ready], list[tuple[Delivery, str]]]:
        """The deliveries to run, and those another consumer is running (with their
        message ids); the others are settled here (dead letters, duplicates) or, for a
        second entry of one message id, held for the next turn."""
        parsed: list[tuple[Delivery, Envelope, int]] = []
        ids: set[str] = set()
        for d in deliveries:
            try:
                envelope = Envelope.from_fields(d.fields)
            except MalformedEntry as exc:
                await self._outcomes.dead_letter(d, None, str(exc), attempts=d.delivered - 1)
                continue
            delivery = envelope.prior + d.delivered
            if delivery > self.retry.max_deliveries:
                reason = f"delivered {delivery - 1} times without an outcome (consumers crashed)"
                await self._outcomes.dead_letter(d, envelope, reason, attempts=delivery - 1)
                continue
            if envelope.mid in ids:
                self._held.append(d)  # after this one's outcome: a duplicate, or a retry
                continue
            ids.add(envelope.mid)
            parsed.append((d, envelope, delivery))
        # Taking the runs, not just reading the markers: two consumers holding entries
        # of one message id at once must not both run it.
        states = await self._runs.take([envelope.mid for _, envelope, _ in parsed])
        await self._outcomes.duplicates(
            [d for (d, _, _), state in zip(parsed, states, strict=True) if state is RunState.DONE]
        )
        ready = []
        busy = []
        for (d, envelope, delivery), state in zip(parsed, states, strict=True):
            if state is RunState.BUSY:
                busy.append((d, envelope.mid))
            if state is not RunState.OURS:
                continue
            try:
                payload = json.loads(envelope.payload)
            except ValueError as exc:
                reason = f"payload is not JSON: {exc}"
                await self._outcomes.dead_letter(d, envelope, reason, attempts=0)
                continue
            message = Message(
                id=envelope.mid,
                payload=payload,
                attempt=delivery,
                stream=self.stream,
                priority=d.priority,
                entry_id=d.entry_id,
                published_at=envelope.published_at_ms / 1000,
            )
            ready.append(Ready(d, envelope, message))
        return ready, busy

    async def _run_batch(self, batch: list[Ready]) -> None:
        """One run for the whole batch; on failure, each half again, down to singles."""
        if len(batch) == 1:
            await self._settle(batch)
            return
        assert isinstance(self._handler, BatchHandler)
        error = await self._attempt(self._handler.handle_batch([r.message for r in batch]), batch)
        if error is None:
            await self._outcomes.commit_many([(r.delivery, r.envelope) for r in batch])
            return
        self._outcomes.count_split()
        log.info(
            "batch failed; splitting it to find the failing messages",
            extra=self._where(size=len(batch), error=_describe(error)),
        )
        half = len(batch) // 2
        await self._run_batch(batch[:half])
        await self._run_batch(batch[half:])

    async def _settle(self, batch: list[Ready]) -> None:
        """Run one message and write its outcome: commit, retry or dead letter."""
        (one,) = batch
        if isinstance(self._handler, BatchHandler):
            error = await self._attempt(self._handler.handle_batch([one.message]), batch)
        else:
            error = await self._attempt(self._handler(one.message), batch)
        d, envelope, delivery = one.delivery, one.envelope, one.message.attempt
        if error is None:
            await self._outcomes.commit_many([(d, envelope)])
        elif isinstance(error, PermanentError) or self.retry.exhausted(delivery):
            await self._outcomes.dead_letter(d, envelope, _describe(error), attempts=delivery)
        else:
            delay = self.retry.delay(delivery, self._rng)
            await self._outcomes.retry(d, envelope, delivery, delay, _describe(error))

    async def _attempt(self, run: Awaitable[None], batch: list[Ready]) -> Exception | None:
        """Await one handler run; its error, if any."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.options.handler_timeout_seconds):
                await run
        except Exception as exc:  # the handler's failure is data here; CancelledError is not
            self._outcomes.count("failed", len(batch))
            return exc
        finally:
            if self._metrics is not None:
                seconds = time.perf_counter() - started
                self._metrics.observe(seconds, len(batch), self.stream, self.group)
        return None

    async def _keep_alive(self, deliveries: list[Delivery], running: list[str]) -> None:
        """Renew our claims of these entries and our runs of these message ids, each for
        as long as it is ours: a split half's settled messages drop out, the rest stay."""
        by_key: dict[str, list[str]] = {}
        for d in deliveries:
            by_key.setdefault(self._keys.priority(d.priority), []).append(d.entry_id)
        while running or any(by_key.values()):
            await asyncio.sleep(self.options.visibility_timeout_seconds / 3)
            try:
                states = await self._runs.renew(running)
            except RedisError as exc:
                log.warning("could not renew a message run", extra=self._where(error=str(exc)))
            else:
                running = self._still_ours(running, states, "message_ids")
            for key, entry_ids in by_key.items():
                try:
                    raw = await self._keep_alive_script(
                        keys=[key], args=[self.group, self.name, *entry_ids]
                    )
                except RedisError as exc:
                    log.warning(
                        "could not renew a message claim", extra=self._where(error=str(exc))
                    )
                    continue
                states = [Held(int(state)) for state in raw]
                by_key[key] = self._still_ours(entry_ids, states, "entry_ids")

    def _still_ours(self, names: list[str], states: list[Held], what: str) -> list[str]:
        """The names still ours; a warning for those another consumer took over (the
        others we settled ourselves)."""
        lost = [name for name, state in zip(names, states, strict=True) if state is Held.OTHER]
        if lost:
            log.warning(
                "another consumer took over a message still being handled",
                extra=self._where(**{what: lost[:10]}, lost=len(lost)),
            )
        return [name for name, state in zip(names, states, strict=True) if state is Held.OURS]

    def _where(self, **fields: object) -> dict[str, object]:
        return {"stream": self.stream, "group": self.group, "consumer": self.name, **fields}


def _describe(error: Exception) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return "TimeoutError: the handler exceeded its timeout"
    return f"{type(error).__name__}: {error}"[:ERROR_LIMIT]
