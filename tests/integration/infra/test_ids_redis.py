"""Leased worker ids on a real Redis: never shared, released, replaced when lost."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from blueprint.infra.ids import IdGenerator, NoWorkerIdFree, WorkerLease, WorkerLeaseLost, decompose
from blueprint.infra.ids.snowflake import MAX_WORKER_ID, wall_clock_ms

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail("condition not met in time")


def _generator(redis: aioredis.Redis, prefix: str, lease_seconds: float = 10) -> IdGenerator:
    return IdGenerator(redis, key_prefix=f"{prefix}:ids", lease_seconds=lease_seconds)


async def test_generators_with_distinct_leased_workers_make_unique_increasing_ids(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    generators = [_generator(redis, redis_prefix) for _ in range(8)]
    await asyncio.gather(*(g.start() for g in generators))
    try:
        worker_ids = [g.worker_id for g in generators]
        assert len(set(worker_ids)) == 8

        async def make(generator: IdGenerator) -> list[int]:
            made = []
            for n in range(1500):
                made.append(await generator.next_id())
                if n % 100 == 0:
                    await asyncio.sleep(0)  # let the generators interleave
            return made

        batches = await asyncio.gather(*(make(g) for g in generators))
    finally:
        await asyncio.gather(*(g.close() for g in generators))
    every = [i for batch in batches for i in batch]
    assert len(set(every)) == len(every) == 8 * 1500
    for worker_id, batch in zip(worker_ids, batches, strict=True):
        assert all(a < b for a, b in itertools.pairwise(batch))
        assert {decompose(i).worker_id for i in batch} == {worker_id}


async def test_two_processes_racing_for_worker_ids_never_share_one(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    leases = await asyncio.gather(
        *(WorkerLease.acquire(redis, key_prefix=redis_prefix, ttl_seconds=10) for _ in range(50))
    )
    assert len({lease.worker_id for lease in leases}) == 50


async def test_closing_releases_the_worker_id_and_records_its_last_millisecond(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    generator = _generator(redis, redis_prefix)
    async with generator:
        worker_id = generator.worker_id
        last = await generator.next_id()
    assert await redis.get(f"{redis_prefix}:ids:worker:{worker_id}") is None
    mark = int(await redis.get(f"{redis_prefix}:ids:worker:{worker_id}:mark") or 0)
    assert mark == decompose(last).unix_ms
    with pytest.raises(RuntimeError, match="closed"):
        await generator.next_id()


async def test_a_new_holder_makes_ids_only_after_the_previous_holders_mark(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    # Every worker id was used 300 ms into the future (a holder whose clock ran ahead).
    ahead = wall_clock_ms() + 300
    await redis.mset({f"{redis_prefix}:ids:worker:{w}:mark": ahead for w in range(1024)})
    async with _generator(redis, redis_prefix) as generator:
        first = await generator.next_id()
    assert decompose(first).unix_ms > ahead  # waited out the small lead, repeated nothing


async def test_a_lost_lease_stops_ids_until_another_worker_id_is_leased(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    async with _generator(redis, redis_prefix, lease_seconds=1.5) as generator:
        lost = generator.worker_id
        before = await generator.next_id()
        # Someone else now holds it (as after a pause longer than the TTL).
        await redis.set(f"{redis_prefix}:ids:worker:{lost}", "another-process", px=60_000)
        await _until(lambda: generator.worker_id not in (lost, None))
        after = await generator.next_id()
    assert after > before
    assert decompose(after).worker_id != lost
    # The other holder's lease was left alone.
    assert await redis.get(f"{redis_prefix}:ids:worker:{lost}") == b"another-process"


async def test_a_process_paused_past_its_lease_refuses_ids_until_it_leases_again(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    async with _generator(redis, redis_prefix, lease_seconds=1) as generator:
        before = await generator.next_id()
        time.sleep(1.2)  # noqa: ASYNC251 - the point: the whole process stalls (GC, SIGSTOP)
        # The renewal could not run; the lease may be someone else's now.
        with pytest.raises(WorkerLeaseLost, match="no worker id is leased"):
            await generator.next_id()
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(WorkerLeaseLost):
                after = await generator.next_id()
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("no worker id was leased again")
    assert after > before


async def test_an_expired_lease_cannot_be_renewed(redis: aioredis.Redis, redis_prefix: str) -> None:
    lease = await WorkerLease.acquire(redis, key_prefix=redis_prefix, ttl_seconds=0.2)
    assert lease.held()
    await asyncio.sleep(0.3)
    assert not lease.held()
    assert await redis.get(f"{redis_prefix}:worker:{lease.worker_id}") is None
    assert not await lease.renew(wall_clock_ms())


async def test_when_every_worker_id_is_taken_starting_fails_clearly(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    keys = {f"{redis_prefix}:ids:worker:{w}": "someone" for w in range(MAX_WORKER_ID + 1)}
    await redis.mset(keys)
    with pytest.raises(NoWorkerIdFree, match="all 1024 worker ids"):
        await _generator(redis, redis_prefix).start()


def test_bad_generator_parameters_are_refused(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    with pytest.raises(ValueError, match="lease_seconds"):
        IdGenerator(client, key_prefix="x", lease_seconds=0)
    with pytest.raises(ValueError, match="key_prefix"):
        IdGenerator(client, key_prefix="")
