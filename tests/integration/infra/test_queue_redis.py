"""The work queue against a real Redis, consumers in this process.

Time that matters to a decision (due times of retries) comes from a fake clock, so
backoff is checked by the due times written, not by waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from blueprint.infra.queue import (
    Consumer,
    ConsumerOptions,
    Events,
    Message,
    PermanentError,
    Priority,
    QueueMetrics,
    RetryPolicy,
    WorkQueue,
)

pytestmark = pytest.mark.redis

STREAM = "jobs"
GROUP = "workers"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A handler that remembers what it was given and can fail, block or take time."""

    def __init__(self, *, fail: BaseException | None = None, sleep: float = 0.0) -> None:
        self.seen: list[Message] = []
        self.fail = fail
        self.sleep = sleep
        self.gate: asyncio.Event | None = None

    async def __call__(self, message: Message) -> None:
        self.seen.append(message)
        if self.gate is not None:
            await self.gate.wait()
        if self.sleep:
            await asyncio.sleep(self.sleep)
        if self.fail is not None:
            raise self.fail


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits (bounded) for something another task does; fails the test if it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def queue(redis: aioredis.Redis, redis_prefix: str, clock: FakeClock) -> WorkQueue:
    work_queue = WorkQueue(redis, prefix=redis_prefix, clock=clock)
    await work_queue.ensure_group(STREAM, GROUP)
    return work_queue


def consumer(
    queue: WorkQueue, handler: Callable[[Message], Awaitable[None]], name: str = "c1", **kw: Any
) -> Consumer:
    options = kw.pop("options", ConsumerOptions(block_seconds=0.05))
    return Consumer(queue, STREAM, GROUP, name, handler, options=options, **kw)


async def test_a_message_is_acknowledged_only_after_its_handler_returns(
    queue: WorkQueue, redis: aioredis.Redis
) -> None:
    mid = await queue.publish(STREAM, {"url": "https://example.com"})
    handler = Recorder()
    handler.gate = asyncio.Event()
    running = asyncio.create_task(consumer(queue, handler).run_once())
    await until(lambda: bool(handler.seen))
    assert await queue.pending(STREAM, GROUP) == 1  # delivered, not yet acknowledged
    handler.gate.set()
    assert await running == 1
    assert await queue.pending(STREAM, GROUP) == 0
    assert await queue.backlog(STREAM) == {p: 0 for p in Priority}  # acked entries are deleted
    [message] = handler.seen
    assert (message.id, message.payload, message.attempt) == (
        mid,
        {"url": "https://example.com"},
        1,
    )
    assert message.priority is Priority.NORMAL and message.stream == STREAM
    assert await redis.exists(queue.keys(STREAM).processed(GROUP, mid)) == 1


async def test_high_priority_is_read_before_normal_before_low(queue: WorkQueue) -> None:
    for n in range(3):
        for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH):
            await queue.publish(STREAM, f"{priority.name}-{n}", priority=priority)
    handler = Recorder()
    worker = consumer(queue, handler)
    while await worker.run_once(block_seconds=0):
        pass
    assert [m.payload for m in handler.seen] == [
        *(f"HIGH-{n}" for n in range(3)),
        *(f"NORMAL-{n}" for n in range(3)),
        *(f"LOW-{n}" for n in range(3)),
    ]


async def test_failures_back_off_exponentially_then_dead_letter_with_the_error(
    queue: WorkQueue, clock: FakeClock
) -> None:
    retry = RetryPolicy(base_seconds=1.0, multiplier=2.0, jitter=0.2, max_deliveries=5)
    handler = Recorder(fail=RuntimeError("the database said no"))
    worker = consumer(queue, handler, retry=retry, rng=random.Random(5))
    mid = await queue.publish(STREAM, {"n": 1}, priority=Priority.HIGH)
    delays = []
    for delivery in range(1, 5):
        assert await worker.run_once(block_seconds=0)
        [(fields, due_ms)] = await queue.delayed(STREAM)
        assert fields["mid"] == mid and fields["prior"] == str(delivery)
        assert fields["error"] == "RuntimeError: the database said no"
        delay = (due_ms - clock.now * 1000) / 1000
        nominal = 2.0 ** (delivery - 1)
        assert nominal * 0.8 <= delay <= nominal * 1.2
        delays.append(delay)
        clock.now += delay - 0.01
        assert await queue.promote_due(STREAM) == 0  # not due yet: stays put
        assert not await worker.run_once(block_seconds=0)
        clock.now += 0.02
        assert await queue.promote_due(STREAM) == 1
    assert delays == sorted(delays) and len(set(delays)) == 4  # each wait longer than the last
    assert await worker.run_once(block_seconds=0)  # the fifth and last delivery
    assert [m.attempt for m in handler.seen] == [1, 2, 3, 4, 5]
    assert {m.priority for m in handler.seen} == {Priority.HIGH}  # retries keep their priority
    assert await queue.delayed(STREAM) == []
    [letter] = await queue.dead_letters(STREAM)
    assert (letter.message_id, letter.payload, letter.attempts) == (mid, {"n": 1}, 5)
    assert letter.error == "RuntimeError: the database said no"
    assert (letter.group, letter.consumer, letter.priority) == (GROUP, "c1", Priority.HIGH)
    assert await queue.pending(STREAM, GROUP) == 0


async def test_a_permanent_error_dead_letters_at_once(queue: WorkQueue) -> None:
    await queue.publish(STREAM, {"url": "ftp://nope"})
    worker = consumer(queue, Recorder(fail=PermanentError("not an http url")))
    assert await worker.run_once(block_seconds=0)
    [letter] = await queue.dead_letters(STREAM)
    assert (letter.attempts, letter.error) == (1, "PermanentError: not an http url")
    assert await queue.delayed(STREAM) == []


async def test_a_hung_handler_times_out_and_is_retried(queue: WorkQueue) -> None:
    await queue.publish(STREAM, "x")
    options = ConsumerOptions(block_seconds=0, handler_timeout_seconds=0.1)
    worker = consumer(queue, Recorder(sleep=5), options=options)
    assert await worker.run_once()
    [(fields, _)] = await queue.delayed(STREAM)
    assert fields["error"] == "TimeoutError: the handler exceeded its timeout"


async def test_entries_this_code_did_not_write_are_dead_lettered_not_run(
    queue: WorkQueue, redis: aioredis.Redis
) -> None:
    await redis.xadd(queue.keys(STREAM).priority(Priority.NORMAL), {"something": "else"})
    handler = Recorder()
    assert await consumer(queue, handler).run_once(block_seconds=0)
    assert handler.seen == []
    [letter] = await queue.dead_letters(STREAM)
    assert "not a queue message" in letter.error
    assert await queue.pending(STREAM, GROUP) == 0


async def test_a_crashed_consumers_message_is_taken_over_after_the_visibility_timeout(
    queue: WorkQueue,
) -> None:
    options = ConsumerOptions(visibility_timeout_seconds=1.0, block_seconds=0)
    crashing = Recorder()
    crashing.gate = asyncio.Event()  # never set: it hangs until "killed"
    mid = await queue.publish(STREAM, {"job": 1})
    doomed = asyncio.create_task(consumer(queue, crashing, "a", options=options).run_once())
    await until(lambda: bool(crashing.seen))
    doomed.cancel()  # no ack, no more keep-alives: as dead as it gets in-process
    survivor = Recorder()
    other = consumer(queue, survivor, "b", options=options)
    assert not await other.run_once()  # not idle long enough yet: not stolen
    await asyncio.sleep(1.05)
    assert await other.run_once()
    assert [(m.id, m.attempt) for m in survivor.seen] == [(mid, 2)]
    assert await queue.pending(STREAM, GROUP) == 0


async def test_a_slow_handler_keeps_its_message_while_its_process_lives(
    queue: WorkQueue,
) -> None:
    options = ConsumerOptions(visibility_timeout_seconds=0.5, block_seconds=0)
    slow = Recorder(sleep=1.6)  # over three visibility timeouts
    await queue.publish(STREAM, "long job")
    working = asyncio.create_task(consumer(queue, slow, "a", options=options).run_once())
    await until(lambda: bool(slow.seen))
    thief = Recorder()
    other = consumer(queue, thief, "b", options=options)
    while not working.done():
        await other.run_once()
        await asyncio.sleep(0.05)
    assert thief.seen == [] and len(slow.seen) == 1


async def test_a_message_that_keeps_killing_consumers_is_dead_lettered(
    queue: WorkQueue, redis: aioredis.Redis
) -> None:
    options = ConsumerOptions(visibility_timeout_seconds=0.1, block_seconds=0)
    mid = await queue.publish(STREAM, "crashes its consumer")
    key = queue.keys(STREAM).priority(Priority.NORMAL)
    # Two consumers took it and died (read, then claimed), never acknowledging.
    [[_, [(entry_id, _)]]] = await redis.xreadgroup(GROUP, "ghost-1", {key: ">"}, count=1)
    await redis.xclaim(key, GROUP, "ghost-2", 0, [entry_id])
    await asyncio.sleep(0.15)
    handler = Recorder()
    worker = consumer(queue, handler, options=options, retry=RetryPolicy(max_deliveries=2))
    assert await worker.run_once()
    assert handler.seen == []  # a third delivery would exceed the two allowed
    [letter] = await queue.dead_letters(STREAM)
    assert letter.message_id == mid and letter.attempts == 2
    assert "consumers crashed" in letter.error


async def test_a_redelivered_message_that_was_committed_is_acknowledged_unrun(
    queue: WorkQueue,
) -> None:
    registry = CollectorRegistry()
    handler = Recorder()
    worker = consumer(queue, handler, metrics=QueueMetrics(registry))
    await queue.publish(STREAM, "charge card", message_id="order-42")
    await queue.publish(STREAM, "charge card", message_id="order-42")  # the publisher retried
    while await worker.run_once(block_seconds=0):
        pass
    assert len(handler.seen) == 1
    labels = {"stream": STREAM, "group": GROUP}
    assert registry.get_sample_value("blueprint_queue_messages_processed_total", labels) == 1
    assert registry.get_sample_value("blueprint_queue_messages_duplicate_total", labels) == 1
    assert await queue.pending(STREAM, GROUP) == 0


async def test_delayed_publish_waits_for_its_due_time(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.publish(STREAM, "later", delay_seconds=60)
    handler = Recorder()
    worker = consumer(queue, handler)
    clock.now += 59
    await queue.promote_due(STREAM)
    assert not await worker.run_once(block_seconds=0)
    clock.now += 1
    assert await queue.promote_due(STREAM) == 1
    assert await worker.run_once(block_seconds=0)
    assert [m.payload for m in handler.seen] == ["later"]


async def test_concurrent_consumers_process_every_message_exactly_once(
    queue: WorkQueue,
) -> None:
    handler = Recorder(sleep=0.002)
    published = {await queue.publish(STREAM, n) for n in range(200)}
    stop = asyncio.Event()
    workers = [consumer(queue, handler, f"c{n}") for n in range(4)]
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    await until(lambda: len(handler.seen) >= 200)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert Counter(m.id for m in handler.seen) == Counter({mid: 1 for mid in published})
    assert await queue.pending(STREAM, GROUP) == 0


async def test_a_deleted_stream_gets_its_group_back(
    queue: WorkQueue, redis: aioredis.Redis
) -> None:
    await redis.delete(*queue.keys(STREAM).streams)  # group gone with them (NOGROUP)
    handler = Recorder()
    stop = asyncio.Event()
    running = asyncio.create_task(consumer(queue, handler).run(stop))
    await asyncio.sleep(0.1)
    await queue.publish(STREAM, "after the reset")
    await until(lambda: bool(handler.seen))
    stop.set()
    await running
    assert handler.seen[0].payload == "after the reset"


async def test_bad_input_is_refused_clearly(
    queue: WorkQueue, redis_url: str, redis: aioredis.Redis
) -> None:
    bad: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: queue.publish("has space", 1), "stream name"),
        (lambda: queue.publish("", 1), "stream name"),
        (lambda: queue.publish(STREAM, {"x": object()}), "JSON-serializable"),
        (lambda: queue.publish(STREAM, "x" * (1024 * 1024 + 1)), "limit is"),
        (lambda: queue.publish(STREAM, 1, message_id="has space"), "message_id"),
        (lambda: queue.publish(STREAM, 1, message_id=""), "message_id"),
        (lambda: queue.publish(STREAM, 1, delay_seconds=-1), "delay_seconds"),
        (lambda: queue.publish(STREAM, 1, priority=7), "is not a valid Priority"),  # type: ignore[arg-type]
        (lambda: queue.ensure_group(STREAM, "bad group"), "group name"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            await call()
    assert await queue.backlog(STREAM) == {p: 0 for p in Priority}  # nothing was stored
    with pytest.raises(ValueError, match="consumer name"):
        Consumer(queue, STREAM, GROUP, "bad name", Recorder())
    decoding = aioredis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        WorkQueue(decoding, prefix="p")
    await decoding.aclose()
    with pytest.raises(ValueError, match="prefix"):
        WorkQueue(redis, prefix="")


async def test_events_reach_current_subscribers(redis: aioredis.Redis, redis_prefix: str) -> None:
    events = Events(redis, prefix=redis_prefix)
    async with events.subscribe("prices", "trades") as subscription:
        assert await events.publish("prices", {"AAPL": 187.5}) == 1
        await redis.publish(events.channel("trades"), b"not json")  # skipped, not fatal
        await events.publish("trades", ["AAPL", 10])
        received = []
        async for topic, event in subscription:
            received.append((topic, event))
            if len(received) == 2:
                break
    assert received == [("prices", {"AAPL": 187.5}), ("trades", ["AAPL", 10])]
    assert await events.publish("prices", 1) == 0  # nobody listens any more
    with pytest.raises(ValueError, match="topic"):
        await events.publish("bad topic", 1)
    with pytest.raises(ValueError, match="JSON"):
        await events.publish("prices", {1, 2})
