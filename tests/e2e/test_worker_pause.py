"""A worker of the idle colour runs, healthy, but takes nothing off its queue until live.

Issue 9, point 5: workers start on the preview colour so they are verified before
the switch, and must not consume while their colour is idle. The chart mounts the
live colour in a file (a ConfigMap volume, which the kubelet updates in place), and
each worker knows its own colour: here a real `blueprint work example` process, a
real Redis, and a file the test rewrites as the kubelet would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blueprint.infra.queue import WorkQueue
from blueprint.local.processes import free_port
from support import example_queue_handlers as example
from support.waiting import eventually

pytestmark = pytest.mark.redis

TESTS_DIR = Path(__file__).resolve().parents[1]


def publish_live(path: Path, color: str) -> None:
    """Swap the file's content atomically, as the kubelet swaps a ConfigMap volume."""
    fresh = path.with_suffix(".new")
    fresh.write_text(color)
    fresh.replace(path)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def green_worker(
    tmp_path: Path, redis_url: str, redis_prefix: str, log_dir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    live = tmp_path / "activeColor"
    publish_live(live, "blue")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")])),
        BLUEPRINT_REDIS_URL=redis_url,
        BLUEPRINT_REDIS_PREFIX=redis_prefix,
        BLUEPRINT_WORKER_HANDLERS=json.dumps({"example": example.PATH}),
        BLUEPRINT_QUEUE_BLOCK_SECONDS="0.2",
        BLUEPRINT_DRAIN_GRACE_SECONDS="5",
        BLUEPRINT_INSTANCE_ID="example-green-1",
        BLUEPRINT_BIND_HOST="127.0.0.1",
        BLUEPRINT_PORT=str(port),
        BLUEPRINT_METRICS_PORT=str(free_port()),
        BLUEPRINT_WORKER_COLOR="green",
        BLUEPRINT_WORKER_LIVE_COLOR_FILE=str(live),
        BLUEPRINT_WORKER_LIVE_POLL_SECONDS="0.1",
    )
    log = (log_dir / "example-green-1.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "blueprint.cli", "work", "example", "--concurrency", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process, live, port
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


def serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_idle_colour_worker_is_healthy_but_consumes_only_once_live(
    green_worker: tuple[subprocess.Popen[bytes], Path, int],
    redis: aioredis.Redis,
    redis_url: str,
    redis_prefix: str,
) -> None:
    process, live, port = green_worker
    queue = WorkQueue(redis, prefix=redis_prefix)
    await eventually(lambda: serving(port), timeout=20, what="health SERVING")

    await queue.publish(example.STREAM, {"job": "while-idle"})
    # Nothing observable happens while paused, so give it time it would have used:
    # the group exists and the message sits there, unread by this worker.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert await redis.get(example.started_key(redis_prefix, "while-idle")) is None
        await asyncio.sleep(0.1)
    assert process.poll() is None

    publish_live(live, "green")  # promoted: the kubelet updates the mounted ConfigMap

    counts = redis_sync.Redis.from_url(redis_url)
    try:
        await eventually(
            lambda: counts.get(example.done_key(redis_prefix, "while-idle")) == b"1",
            timeout=20,
            what="the message handled once green is live",
        )
    finally:
        counts.close()

    publish_live(live, "blue")  # rolled back: green stops taking work, stays up
    await asyncio.sleep(0.5)  # past a poll: consumers drain, then read nothing more
    await queue.publish(example.STREAM, {"job": "after-rollback"})
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert await redis.get(example.started_key(redis_prefix, "after-rollback")) is None
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(serving, port)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 15) == 0
