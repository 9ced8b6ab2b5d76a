"""`blueprint work NAME` as real processes, killed with real signals.

The handler is `support.example_queue_handlers`: it counts `started` and `done` per job
in Redis, so a test sees what ran, where, and how often.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blueprint.infra.queue import Priority, WorkQueue
from blueprint.local.processes import free_port
from support import example_queue_handlers as example

pytestmark = pytest.mark.redis

# `python -m blueprint.cli work` once cli.py registers the command; the same code path.
WORKER_COMMAND = [sys.executable, "-m", "blueprint.cli", "work"]
TESTS_DIR = Path(__file__).resolve().parents[1]
VISIBILITY_TIMEOUT = 1.0


def worker_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")])),
        BLUEPRINT_REDIS_URL=redis_url,
        BLUEPRINT_REDIS_PREFIX=prefix,
        BLUEPRINT_WORKER_HANDLERS=json.dumps({"example": example.PATH}),
        BLUEPRINT_QUEUE_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        BLUEPRINT_QUEUE_BLOCK_SECONDS="0.2",
        BLUEPRINT_QUEUE_PROMOTE_INTERVAL_SECONDS="0.1",
        BLUEPRINT_QUEUE_RETRY_BASE_SECONDS="0.05",
        BLUEPRINT_DRAIN_GRACE_SECONDS="5",
    )
    env.update(extra)
    return env


class Worker:
    def __init__(self, instance_id: str, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{instance_id}.log"
        child_env = dict(
            env, BLUEPRINT_INSTANCE_ID=instance_id, BLUEPRINT_METRICS_PORT=str(self.metrics_port)
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*WORKER_COMMAND, "example", *args],
                env=child_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_entries(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log().splitlines() if line.strip()]

    def wait_working(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while '"message": "working"' not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{self.log()}")
            time.sleep(0.05)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text: str = reply.read().decode()
            return text

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker ignored SIGTERM:\n{self.log()}") from None


@pytest.fixture
def workers(log_dir: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(instance_id: str, env: dict[str, str], *args: str) -> Worker:
        worker = Worker(instance_id, env, log_dir, *args)
        started.append(worker)
        worker.wait_working()
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def queue(redis: aioredis.Redis, redis_prefix: str) -> WorkQueue:
    return WorkQueue(redis, prefix=redis_prefix)


async def counter(redis: aioredis.Redis, key: str) -> int:
    return int(await redis.get(key) or 0)


async def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


async def test_a_message_whose_worker_is_killed_is_processed_once_by_another(
    workers: Callable[..., Worker], redis_url: str, redis_prefix: str, redis: aioredis.Redis,
    queue: WorkQueue,
) -> None:  # fmt: skip
    env = worker_env(redis_url, redis_prefix)
    first = workers("worker-a", env, "--concurrency", "1")
    await queue.publish(example.STREAM, {"job": "j1", "hang_first_attempt": True})
    started, done = example.started_key(redis_prefix, "j1"), example.done_key(redis_prefix, "j1")

    async def has_started() -> bool:
        return await counter(redis, started) == 1

    await eventually(has_started, 10, "the first worker starting the message")
    first.process.send_signal(signal.SIGKILL)  # mid-message: no ack, no goodbye
    first.process.wait(timeout=10)
    second = workers("worker-b", env, "--concurrency", "1")

    async def is_done() -> bool:
        return await counter(redis, done) >= 1

    await eventually(is_done, VISIBILITY_TIMEOUT + 10, "the second worker finishing it")
    await asyncio.sleep(VISIBILITY_TIMEOUT * 1.5)  # room for a duplicate, were there one
    assert await counter(redis, done) == 1  # the side effect happened exactly once
    assert await counter(redis, started) == 2  # once in the killed worker, once here
    assert await queue.pending(example.STREAM, example.GROUP) == 0
    assert await queue.backlog(example.STREAM) == {p: 0 for p in Priority}
    assert "took over a message from an idle consumer" in second.log()
    assert second.stop() == 0


async def test_sigterm_finishes_in_flight_messages_reads_no_more_and_exits_0(
    workers: Callable[..., Worker], redis_url: str, redis_prefix: str, redis: aioredis.Redis,
    queue: WorkQueue,
) -> None:  # fmt: skip
    worker = workers("worker-a", worker_env(redis_url, redis_prefix), "--concurrency", "2")
    for job in ("j1", "j2"):
        await queue.publish(example.STREAM, {"job": job, "sleep": 1.5})

    async def both_started() -> bool:
        return all(
            [await counter(redis, example.started_key(redis_prefix, j)) for j in ("j1", "j2")]
        )

    await eventually(both_started, 10, "both messages starting")
    worker.process.send_signal(signal.SIGTERM)
    await queue.publish(example.STREAM, {"job": "j3"})  # arrives while draining
    code = await asyncio.to_thread(worker.stop)
    assert code == 0, worker.log()
    for job in ("j1", "j2"):
        assert await counter(redis, example.done_key(redis_prefix, job)) == 1
    assert await counter(redis, example.started_key(redis_prefix, "j3")) == 0
    assert await queue.pending(example.STREAM, example.GROUP) == 0
    assert (await queue.backlog(example.STREAM))[Priority.NORMAL] == 1  # j3 waits for the next
    messages = [entry["message"] for entry in worker.log_entries()]
    assert messages.index("draining") < messages.index("stopped")


async def test_a_poison_message_is_dead_lettered_and_counted_in_metrics(
    workers: Callable[..., Worker], redis_url: str, redis_prefix: str, redis: aioredis.Redis,
    queue: WorkQueue,
) -> None:  # fmt: skip
    env = worker_env(redis_url, redis_prefix, BLUEPRINT_QUEUE_MAX_DELIVERIES="3")
    worker = workers("worker-a", env)
    await queue.publish(example.STREAM, {"job": "poison", "fail": True})
    await queue.publish(example.STREAM, {"job": "fine"})

    async def dead_lettered() -> bool:
        return bool(await queue.dead_letters(example.STREAM))

    await eventually(dead_lettered, 15, "the poison message reaching the dead-letter stream")
    [letter] = await queue.dead_letters(example.STREAM)
    assert letter.payload == {"job": "poison", "fail": True} and letter.attempts == 3
    assert letter.error == "RuntimeError: job poison fails on purpose (attempt 3)"
    assert await counter(redis, example.started_key(redis_prefix, "poison")) == 3
    assert await counter(redis, example.done_key(redis_prefix, "fine")) == 1
    metrics = worker.metrics()
    labels = f'group="{example.GROUP}",stream="{example.STREAM}"'
    for name, value in [
        ("blueprint_queue_messages_processed_total", 1),
        ("blueprint_queue_messages_failed_total", 3),
        ("blueprint_queue_messages_retried_total", 2),
        ("blueprint_queue_messages_dead_lettered_total", 1),
        ("blueprint_queue_handler_duration_seconds_count", 4),
    ]:
        assert f"{name}{{{labels}}} {float(value)}" in metrics, name
    assert worker.stop() == 0
    entries = worker.log_entries()  # every line is a JSON object
    assert {e["service"] for e in entries} == {"example"}
    dead = [e for e in entries if e["message"] == "message dead-lettered"]
    assert dead and dead[0]["attempts"] == 3


def _blueprint_work(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WORKER_COMMAND, *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    ("args", "extra_env", "expected"),
    [
        (("nosuch",), {}, "blueprint work: unknown worker 'nosuch'; workers: example"),
        (("broken",), {"BLUEPRINT_WORKER_HANDLERS": '{"broken": "nope"}'}, "is not 'module:"),
        (("example", "--concurrency", "0"), {}, "--concurrency must be 1-256, got 0"),
        (("example",), {"BLUEPRINT_REDIS_URL": ""}, "no Redis: set BLUEPRINT_REDIS_URL"),
        (("example",), {"BLUEPRINT_WORKER_CONCURRENCY": "0"}, "BLUEPRINT_WORKER_CONCURRENCY"),
        (("example",), {"BLUEPRINT_QUEUE_RETRY_JITTER": "0.5"}, "BLUEPRINT_QUEUE_RETRY_JITTER"),
    ],
)
def test_bad_usage_gets_one_clear_line(
    args: tuple[str, ...], extra_env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    env = worker_env("redis://127.0.0.1:1/0", "unused", BLUEPRINT_STATE_DIR=str(tmp_path))
    env.update(extra_env)
    if env.get("BLUEPRINT_REDIS_URL") == "":
        del env["BLUEPRINT_REDIS_URL"]
    result = _blueprint_work(*args, env=env)
    assert result.returncode != 0
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreachable_redis_is_logged_and_exits_1() -> None:
    env = worker_env("redis://127.0.0.1:1/0", "unused", BLUEPRINT_METRICS_PORT=str(free_port()))
    result = _blueprint_work("example", env=env)
    assert result.returncode == 1
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    [failure] = [e for e in entries if e["level"] == "error"]
    assert failure["message"] == "cannot reach Redis" and "127.0.0.1:1" in failure["error"]


def test_a_worker_answers_the_grpc_health_check_kubernetes_probes(
    workers: Callable[..., Worker], redis_url: str, redis_prefix: str
) -> None:
    port = free_port()
    env = worker_env(redis_url, redis_prefix, BLUEPRINT_PORT=str(port))
    worker = workers("worker-health", env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert worker.stop() == 0


def test_a_worker_is_a_first_class_instance_health_reflection_discovery_metrics(
    workers: Callable[..., Worker], redis_url: str, redis_prefix: str
) -> None:
    """Like a server: health per name and liveness, reflection, registered in discovery
    with its metrics port (so `blueprint status` and the local Prometheus see it), and
    gone from discovery once it stops."""
    port = free_port()
    env = worker_env(redis_url, redis_prefix, BLUEPRINT_PORT=str(port))
    worker = workers("worker-citizen", env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {
            name: health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            for name in ("", "example", "liveness")
        }
        reflected = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        services = {s.name for reply in reflected for s in reply.list_services_response.service}
    assert set(statuses.values()) == {health_pb2.HealthCheckResponse.SERVING}
    assert services == {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}

    status = subprocess.run(
        [sys.executable, "-m", "blueprint.cli", "status"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    [row] = [line.split() for line in status.stdout.splitlines() if "worker-citizen" in line]
    assert row[0] == "example" and row[2] == f"127.0.0.1:{port}"
    assert row[4] == "SERVING" and row[5] == str(worker.metrics_port)

    targets = asyncio.run(_prometheus_targets(redis_url, redis_prefix))
    labels = {"service": "example", "instance_id": "worker-citizen"}
    assert {"targets": [f"127.0.0.1:{worker.metrics_port}"], "labels": labels} in targets
    assert "blueprint_queue" in worker.metrics()  # what Prometheus scrapes there

    assert worker.stop() == 0
    assert asyncio.run(_prometheus_targets(redis_url, redis_prefix)) == []


async def _prometheus_targets(redis_url: str, prefix: str) -> list[dict[str, object]]:
    from blueprint.mesh.discovery import RedisRegistry

    sys.path.insert(0, str(TESTS_DIR.parent / "scripts" / "observability"))
    try:
        import prometheus_targets
    finally:
        sys.path.pop(0)
    registry = RedisRegistry.from_url(
        redis_url, prefix=prefix, lease_ttl_seconds=3, resync_seconds=0.5
    )
    try:
        return await prometheus_targets.targets(registry)
    finally:
        await registry.close()
