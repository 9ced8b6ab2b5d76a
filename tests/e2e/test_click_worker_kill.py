"""The click worker killed with SIGKILL in the middle of a backlog: every click is
counted exactly once.

A `blueprint work shortener-clicks` process counts a backlog of clicks in batches on the
machine's PostgreSQL; it is killed while it works, so a batch may have committed
without its acknowledgement, or been cut mid-transaction. A second worker takes over
the killed one's batch after the visibility timeout and finishes the backlog. The
counts must equal the clicks published: none lost, none twice.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from blueprint.infra.queue import Priority, WorkQueue
from blueprint.infra.sql import ShardedDatabase
from blueprint.local.processes import ready_env, wait_ready
from blueprint.mesh.settings import Settings
from blueprint.shortener.clicks import CLICK_GROUP, CLICK_STREAM, Click
from blueprint.shortener.records import Link
from blueprint.shortener.store import ShortenerStore
from support.mesh import mesh_env
from support.postgres import postgres_or_skip

pytestmark = pytest.mark.redis

BLUEPRINT = [sys.executable, "-m", "blueprint.cli"]
LINKS = 20
CLICKS = 3000
VISIBILITY_TIMEOUT = 1.0


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_or_skip().databases("shortener_click_kill") as (url,):
        yield url


@pytest.fixture
def env(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = mesh_env(
        redis_url,
        redis_prefix,
        BLUEPRINT_STATE_DIR=str(tmp_path / "state"),
        BLUEPRINT_DATABASE_URL=database_url,
        BLUEPRINT_QUEUE_BLOCK_SECONDS="0.2",
        BLUEPRINT_QUEUE_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        BLUEPRINT_QUEUE_BATCH_SIZE="25",  # many batches: the kill lands inside the backlog
    )
    migrated = subprocess.run(
        [*BLUEPRINT, "migrate", "shortener"], env=env, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stderr
    return env


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ShortenerStore]:
    database = ShardedDatabase.from_settings(Settings(database_url=database_url), "shortener")
    yield ShortenerStore(database)
    await database.dispose()


class ClickWorker:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        ready_file = log_dir / f"{name}.ready.json"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*BLUEPRINT, "work", "shortener-clicks"],
                env={**env, **ready_env(ready_file), "BLUEPRINT_INSTANCE_ID": name},
                stdout=log,
                stderr=log,
            )
        wait_ready(self.process, ready_file, self.log_path, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def counted(store: ShortenerStore, codes: list[str]) -> int:
    total = 0
    for code in codes:
        total += (await store.click_stats(code, date(2000, 1, 1))).total
    return total


async def test_a_click_worker_killed_mid_backlog_leaves_every_click_counted_once(
    env: dict[str, str], store: ShortenerStore, redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    now = datetime.now(UTC)
    codes = [f"kill{n:02d}" for n in range(LINKS)]
    for n, code in enumerate(codes):
        await store.insert_link(Link(code, n + 1, f"https://example.com/{code}", now, None), "0")
    redis = aioredis.Redis.from_url(redis_url)
    queue = WorkQueue(redis, prefix=redis_prefix)
    workers: list[ClickWorker] = []
    try:
        await queue.ensure_group(CLICK_STREAM, CLICK_GROUP)
        for n in range(CLICKS):
            code = codes[n % LINKS]
            click = Click(code, codes.index(code) + 1, now)
            await queue.publish(
                CLICK_STREAM, click.payload(), priority=Priority.LOW, message_id=f"click-{n}"
            )
        # Some clicks published twice (a Resolve retried with its request id): once each.
        for n in range(0, CLICKS, 100):
            code = codes[n % LINKS]
            click = Click(code, codes.index(code) + 1, now)
            await queue.publish(
                CLICK_STREAM, click.payload(), priority=Priority.LOW, message_id=f"click-{n}"
            )

        first = ClickWorker("clicks-a", env, log_dir)
        workers.append(first)
        for _ in range(3000):  # until it is well into the backlog
            if await counted(store, codes) >= CLICKS // 10:
                break
            await asyncio.sleep(0.02)
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(timeout=10) == -signal.SIGKILL
        at_kill = await counted(store, codes)
        assert at_kill < CLICKS, "the worker finished before the kill: the test proved nothing"
        in_flight = await queue.pending(CLICK_STREAM, CLICK_GROUP)
        assert in_flight > 0, "no batch was in flight at the kill: the test proved nothing"

        second = ClickWorker("clicks-b", env, log_dir)
        workers.append(second)
        for _ in range(6000):
            backlog = sum((await queue.backlog(CLICK_STREAM)).values())
            if backlog == 0 and await queue.pending(CLICK_STREAM, CLICK_GROUP) == 0:
                break
            await asyncio.sleep(0.05)
        assert sum((await queue.backlog(CLICK_STREAM)).values()) == 0, second.log()
        print(f"counted {at_kill} before the kill ({in_flight} in flight), {CLICKS} at the end")
        assert await counted(store, codes) == CLICKS
        assert "took over a message from an idle consumer" in second.log()
        assert await queue.dead_letters(CLICK_STREAM) == []
    finally:
        for worker in workers:
            worker.stop()
        await redis.aclose()
