"""Batch handlers against a real Redis: what a batch holds, how it is acknowledged, and
how a failing batch is split so that one poison message holds up no other.

Due times of retries come from a fake clock; nothing here waits on wall time except the
one takeover test, which must outwait Redis's own idle clock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from blueprint.infra.queue import (
    BatchHandler,
    Consumer,
    ConsumerOptions,
    Message,
    PermanentError,
    Priority,
    QueueMetrics,
    RetryPolicy,
    WorkQueue,
    depth,
)
from support.clock import FakeClock
from support.waiting import eventually

pytestmark = pytest.mark.redis

STREAM = "batched"
GROUP = "counters"
LABELS = {"stream": STREAM, "group": GROUP}


class Batches:
    """A batch handler that commits the ids of a batch to `committed` all at once, or
    raises (and commits none) when the batch holds a message marked `poison`."""

    def __init__(self, *, fail: BaseException | None = None) -> None:
        self.runs: list[list[str]] = []
        self.committed: list[str] = []
        self.fail = fail
        self.gate: asyncio.Event | None = None

    async def handle_batch(self, messages: Sequence[Message]) -> None:
        self.runs.append([m.id for m in messages])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        poisoned = [
            m.id for m in messages if isinstance(m.payload, dict) and m.payload.get("poison")
        ]
        if poisoned:
            raise RuntimeError(f"cannot handle {poisoned}")
        self.committed.extend(m.id for m in messages)


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


def batch_consumer(
    queue: WorkQueue, handler: BatchHandler, name: str = "c1", **options: Any
) -> tuple[Consumer, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = {"block_seconds": 0.05, "batch_size": 5, "batch_max_wait_seconds": 0.0, **options}
    consumer = Consumer(
        queue,
        STREAM,
        GROUP,
        name,
        handler,
        options=ConsumerOptions(**settings),
        retry=RetryPolicy(base_seconds=1.0, jitter=0.0, max_deliveries=3),
        metrics=QueueMetrics(registry),
    )
    return consumer, registry


async def publish(queue: WorkQueue, count: int, **payload: Any) -> list[str]:
    return [
        await queue.publish(STREAM, {"n": n, **payload}, message_id=f"m{n}{payload.get('tag', '')}")
        for n in range(count)
    ]


async def drain(consumer: Consumer) -> None:
    while await consumer.run_once(block_seconds=0):
        pass


def sample(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name, LABELS) or 0.0


async def test_a_batch_handler_gets_up_to_batch_size_messages_per_run(
    queue: WorkQueue, redis: aioredis.Redis
) -> None:
    ids = await publish(queue, 7)
    handler = Batches()
    consumer, registry = batch_consumer(queue, handler)
    assert await consumer.run_once(block_seconds=0) == 5
    assert await consumer.run_once(block_seconds=0) == 2
    assert handler.runs == [ids[:5], ids[5:]]  # in publish order
    assert handler.committed == ids
    assert await queue.pending(STREAM, GROUP) == 0
    assert await queue.backlog(STREAM) == {p: 0 for p in Priority}
    markers = [queue.keys(STREAM).processed(GROUP, mid) for mid in ids]
    assert await redis.exists(*markers) == 7
    assert sample(registry, "blueprint_queue_messages_processed_total") == 7
    assert sample(registry, "blueprint_queue_batch_messages_count") == 2  # two runs
    assert sample(registry, "blueprint_queue_batch_messages_sum") == 7


async def test_a_batch_that_is_not_full_waits_for_more_up_to_the_max_wait(
    queue: WorkQueue,
) -> None:
    handler = Batches()
    consumer, _ = batch_consumer(queue, handler, batch_max_wait_seconds=10.0, batch_size=3)
    first = await queue.publish(STREAM, {"n": 0})
    running = asyncio.create_task(consumer.run_once(block_seconds=5))
    for _ in range(500):  # the first message read: the consumer now waits for more
        if await queue.pending(STREAM, GROUP):
            break
        await asyncio.sleep(0.02)
    assert await queue.pending(STREAM, GROUP) == 1
    later = [await queue.publish(STREAM, {"n": n}) for n in (1, 2)]
    assert await asyncio.wait_for(running, 30) == 3  # full: no need to wait out the 10 s
    assert handler.runs == [[first, *later]]


async def test_with_no_max_wait_a_batch_is_whatever_is_there(queue: WorkQueue) -> None:
    ids = await publish(queue, 2)
    handler = Batches()
    consumer, _ = batch_consumer(queue, handler, batch_size=100)
    assert await consumer.run_once(block_seconds=0) == 2
    assert handler.runs == [ids]


async def test_a_poison_message_is_split_out_and_the_rest_commit(
    queue: WorkQueue, clock: FakeClock
) -> None:
    good = await publish(queue, 3)
    [poison] = await publish(queue, 1, poison=True, tag="p")
    good += await publish(queue, 4, tag="g")
    handler = Batches()
    consumer, registry = batch_consumer(queue, handler, batch_size=8)
    assert await consumer.run_once(block_seconds=0) == 8
    assert sorted(handler.committed) == sorted(good)
    assert poison not in handler.committed
    # 8 -> 4 + 4; the poisoned four -> 2 + 2; its pair -> 1 + 1: three splits.
    assert sample(registry, "blueprint_queue_batch_splits_total") == 3
    assert [poison] in handler.runs
    [(member, due_ms)] = await queue.delayed(STREAM)
    assert member["mid"] == poison and due_ms == queue.now_ms() + 1000  # retried, no jitter

    # Its retries come alone, and after the last allowed delivery it is a dead letter.
    for _ in range(2):
        clock.advance(3600)
        assert await queue.promote_due(STREAM) == 1
        await drain(consumer)
    [letter] = await queue.dead_letters(STREAM)
    assert letter.message_id == poison and letter.attempts == 3
    assert "cannot handle" in letter.error
    assert await queue.pending(STREAM, GROUP) == 0
    assert await queue.delayed(STREAM) == []
    assert sample(registry, "blueprint_queue_messages_processed_total") == 7
    assert sample(registry, "blueprint_queue_messages_dead_lettered_total") == 1


async def test_a_permanent_error_in_a_batch_dead_letters_only_its_message(
    queue: WorkQueue,
) -> None:
    class Strict(Batches):
        async def handle_batch(self, messages: Sequence[Message]) -> None:
            if any(m.payload.get("poison") for m in messages):
                raise PermanentError("not a click")
            await super().handle_batch(messages)

    good = await publish(queue, 3)
    [poison] = await publish(queue, 1, poison=True, tag="p")
    handler = Strict()
    consumer, _ = batch_consumer(queue, handler)
    await drain(consumer)
    assert sorted(handler.committed) == sorted(good)
    [letter] = await queue.dead_letters(STREAM)
    assert letter.message_id == poison and letter.attempts == 1  # at once: no retries
    assert await queue.delayed(STREAM) == []


async def test_a_batch_that_fails_as_a_whole_is_retried_message_by_message(
    queue: WorkQueue,
) -> None:
    ids = await publish(queue, 4)
    handler = Batches(fail=ConnectionError("database unreachable"))
    consumer, registry = batch_consumer(queue, handler)
    await drain(consumer)
    assert handler.committed == []
    delayed = await queue.delayed(STREAM)
    assert sorted(member["mid"] for member, _ in delayed) == sorted(ids)
    assert all(member["prior"] == "1" for member, _ in delayed)  # one delivery each, no more
    assert sample(registry, "blueprint_queue_messages_retried_total") == 4
    assert await queue.pending(STREAM, GROUP) == 0


async def test_one_message_id_twice_in_a_batch_runs_once(queue: WorkQueue) -> None:
    for n in range(3):
        await queue.publish(STREAM, {"n": n}, message_id="same")  # a publisher retrying
    await queue.publish(STREAM, {"n": 9}, message_id="other")
    handler = Batches()
    consumer, registry = batch_consumer(queue, handler)
    await drain(consumer)
    assert sorted(handler.committed) == ["other", "same"]
    assert handler.runs == [["same", "other"]]  # the second and third were not run
    assert sample(registry, "blueprint_queue_messages_processed_total") == 2
    assert sample(registry, "blueprint_queue_messages_duplicate_total") == 2
    assert await queue.pending(STREAM, GROUP) == 0


async def test_a_message_committed_in_an_earlier_batch_is_acknowledged_unrun(
    queue: WorkQueue,
) -> None:
    first = await publish(queue, 2)
    handler = Batches()
    consumer, registry = batch_consumer(queue, handler)
    await drain(consumer)
    again = [await queue.publish(STREAM, {"n": 0}, message_id=first[0])]
    again += await publish(queue, 1, tag="new")
    await drain(consumer)
    assert handler.runs == [first, [again[1]]]
    assert sample(registry, "blueprint_queue_messages_duplicate_total") == 1


async def test_a_crashed_consumers_batch_is_taken_over_as_a_batch(queue: WorkQueue) -> None:
    ids = await publish(queue, 4)
    hanging = Batches()
    hanging.gate = asyncio.Event()  # never set: it hangs until "killed"
    doomed_consumer, _ = batch_consumer(queue, hanging, "a", visibility_timeout_seconds=1.0)
    doomed = asyncio.create_task(doomed_consumer.run_once(block_seconds=0))
    await eventually(lambda: bool(hanging.runs), 10, "the batch handed over")
    doomed.cancel()  # no ack, no more keep-alives: as dead as it gets in-process
    handler = Batches()
    survivor, registry = batch_consumer(queue, handler, "b", visibility_timeout_seconds=1.0)
    assert not await survivor.run_once(block_seconds=0)  # not idle long enough yet
    await asyncio.sleep(1.05)
    assert await survivor.run_once(block_seconds=0) == 4
    assert handler.runs == [ids]
    assert sample(registry, "blueprint_queue_messages_claimed_total") == 4
    assert await queue.pending(STREAM, GROUP) == 0


async def test_a_plain_handler_still_takes_one_message_at_a_time(queue: WorkQueue) -> None:
    seen: list[str] = []

    async def one(message: Message) -> None:
        seen.append(message.id)

    ids = await publish(queue, 3)
    consumer = Consumer(
        queue, STREAM, GROUP, "c1", one, options=ConsumerOptions(batch_size=50, block_seconds=0)
    )
    assert [await consumer.run_once(block_seconds=0) for _ in range(4)] == [1, 1, 1, 0]
    assert seen == ids


async def test_depth_is_sampled_from_redis_and_lag_measured_from_first_publish(
    queue: WorkQueue, clock: FakeClock
) -> None:
    registry = CollectorRegistry()
    metrics = QueueMetrics(registry)
    ids = await publish(queue, 3)
    await queue.publish(STREAM, {"urgent": True}, priority=Priority.HIGH)
    await queue.publish(STREAM, {"later": True}, delay_seconds=60)
    clock.advance(20)
    await depth.sample(queue, STREAM, GROUP, metrics)

    def gauge(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"stream": STREAM, **labels})

    assert gauge("blueprint_queue_backlog", priority="normal") == 3
    assert gauge("blueprint_queue_backlog", priority="high") == 1
    assert gauge("blueprint_queue_pending", group=GROUP) == 0
    assert gauge("blueprint_queue_delayed") == 1
    assert gauge("blueprint_queue_dead_letters") == 0
    assert gauge("blueprint_queue_oldest_message_age_seconds") == pytest.approx(20, abs=0.01)

    handler = Batches()
    consumer = Consumer(
        queue, STREAM, GROUP, "c1", handler,
        options=ConsumerOptions(block_seconds=0, batch_size=10, batch_max_wait_seconds=0),
        metrics=metrics,
    )  # fmt: skip
    assert await consumer.run_once(block_seconds=0) == 4
    assert set(ids) <= set(handler.committed) and len(handler.committed) == 4
    labels = {"stream": STREAM, "group": GROUP}
    assert registry.get_sample_value("blueprint_queue_lag_seconds_count", labels) == 4
    assert registry.get_sample_value("blueprint_queue_lag_seconds_sum", labels) == pytest.approx(
        80, abs=0.1
    )  # four messages, each published 20 s before its commit
    await depth.sample(queue, STREAM, GROUP, metrics)
    assert gauge("blueprint_queue_backlog", priority="normal") == 0
    assert gauge("blueprint_queue_oldest_message_age_seconds") == 0


async def test_one_message_id_on_two_consumers_at_once_runs_once(
    queue: WorkQueue, caplog: pytest.LogCaptureFixture
) -> None:
    # A publisher sending one message id twice; each entry reaches another consumer while
    # the first is still running it (the click worker's four consumers do this).
    caplog.set_level(logging.INFO, logger="blueprint.infra.queue.consumer")
    await queue.publish(STREAM, {"n": 1}, message_id="same")
    first_handler = Batches()
    first_handler.gate = asyncio.Event()  # held inside its run until we let it commit
    first, first_registry = batch_consumer(queue, first_handler, "a")
    running_first = asyncio.create_task(first.run_once(block_seconds=0))
    await eventually(lambda: bool(first_handler.runs), 10, "the first copy running")

    await queue.publish(STREAM, {"n": 2}, message_id="same")
    second_handler = Batches()
    second_handler.gate = asyncio.Event()  # a wrongly started second run stays visible
    second, second_registry = batch_consumer(queue, second_handler, "b")
    running_second = asyncio.create_task(second.run_once(block_seconds=0))

    def waiting() -> bool:
        return any("waiting for its outcome" in r.getMessage() for r in caplog.records)

    await eventually(
        lambda: bool(second_handler.runs) or waiting(), 10, "the second copy run or waiting"
    )
    assert second_handler.runs == [], "the second copy ran while the first was running"
    first_handler.gate.set()
    assert await asyncio.wait_for(running_first, 30) == 1
    assert await asyncio.wait_for(running_second, 30) == 1  # acknowledged as a duplicate
    assert second_handler.runs == []
    assert first_handler.committed == ["same"]
    assert sample(first_registry, "blueprint_queue_messages_processed_total") == 1
    assert sample(second_registry, "blueprint_queue_messages_duplicate_total") == 1
    assert sample(second_registry, "blueprint_queue_messages_processed_total") == 0
    assert await queue.pending(STREAM, GROUP) == 0


async def test_a_second_entry_waiting_on_another_consumer_runs_if_the_first_fails(
    queue: WorkQueue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blueprint.infra.queue.consumer")
    await queue.publish(STREAM, {"n": 1}, message_id="same")
    failing = Batches(fail=ConnectionError("database unreachable"))
    failing.gate = asyncio.Event()
    first, _ = batch_consumer(queue, failing, "a")
    running_first = asyncio.create_task(first.run_once(block_seconds=0))
    await eventually(lambda: bool(failing.runs), 10, "the first copy running")
    await queue.publish(STREAM, {"n": 2}, message_id="same")
    handler = Batches()
    second, registry = batch_consumer(queue, handler, "b")
    running_second = asyncio.create_task(second.run_once(block_seconds=0))
    await eventually(
        lambda: any("waiting for its outcome" in r.getMessage() for r in caplog.records),
        10,
        "the second copy waiting",
    )
    failing.gate.set()
    assert await asyncio.wait_for(running_first, 30) == 1  # failed: a retry scheduled
    assert await asyncio.wait_for(running_second, 30) == 1
    assert handler.committed == ["same"]  # run here, once the first had failed
    assert sample(registry, "blueprint_queue_messages_processed_total") == 1

    # The first copy's retry comes back: by now a duplicate.
    clock.advance(3600)
    assert await queue.promote_due(STREAM) == 1
    await drain(second)
    assert handler.runs == [["same"]]
    assert sample(registry, "blueprint_queue_messages_duplicate_total") == 1
    assert await queue.pending(STREAM, GROUP) == 0
    assert await queue.redis.keys(f"{queue.prefix}:*:running:*") == []  # every run freed


async def test_a_split_half_still_running_keeps_its_claims_after_the_other_half_commits(
    queue: WorkQueue, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    class SlowSecondHalf(Batches):
        """Fails as a pair; alone, "a" commits at once and "b" waits for the gate."""

        async def handle_batch(self, messages: Sequence[Message]) -> None:
            self.runs.append([m.id for m in messages])
            if len(messages) > 1:
                raise RuntimeError("split me")
            if messages[0].id == "b" and self.gate is not None:
                await self.gate.wait()
            self.committed.append(messages[0].id)

    caplog.set_level(logging.WARNING, logger="blueprint.infra.queue.consumer")
    for mid in ("a", "b"):
        await queue.publish(STREAM, {"n": mid}, message_id=mid)
    handler = SlowSecondHalf()
    handler.gate = asyncio.Event()
    consumer, _ = batch_consumer(queue, handler, visibility_timeout_seconds=1.2)
    running = asyncio.create_task(consumer.run_once(block_seconds=0))
    await eventually(lambda: handler.runs[-1:] == [["b"]], 10, "the second half running")
    assert handler.committed == ["a"]

    # Renewed again and again after "a" was settled (once, the most it was before): the
    # entry's idle time keeps dropping back, and the run key's life keeps being extended.
    stream_key = queue.keys(STREAM).priority(Priority.NORMAL)
    run_key = queue.keys(STREAM).running(GROUP, "b")
    idle: list[int] = []
    life: list[int] = []

    async def renewals() -> tuple[int, int]:
        [pending] = await redis.xpending_range(stream_key, GROUP, "-", "+", 1)
        idle.append(int(pending["time_since_delivered"]))
        life.append(int(await redis.pttl(run_key)))
        return (
            sum(later < earlier for earlier, later in itertools.pairwise(idle)),
            sum(later > earlier for earlier, later in itertools.pairwise(life)),
        )

    for _ in range(3000):
        entries, runs = await renewals()
        if entries >= 2 and runs >= 2:
            break
        await asyncio.sleep(0.02)
    assert entries >= 2 and runs >= 2, (idle, life)
    handler.gate.set()
    assert await asyncio.wait_for(running, 30) == 2
    assert sorted(handler.committed) == ["a", "b"]
    assert not [r for r in caplog.records if "took over" in r.getMessage()]
    assert await queue.pending(STREAM, GROUP) == 0
