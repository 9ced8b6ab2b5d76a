"""The worker process behind `blueprint work NAME`: one process consuming one queue.

It runs `--concurrency` consumers (each handles one message at a time) plus the loop
that moves due retries back (with a blue-green colour, only while that colour is
live: `gate.py`), serves Prometheus `/metrics` and the standard gRPC health
service and server reflection on BLUEPRINT_PORT (so Kubernetes probes a worker as it
probes a server, and grpcurl lists it), registers in discovery under its own name (so
`blueprint status` lists it, with its metrics port), and logs JSON lines. Its health
follows its hard dependency, the queue's Redis (`mesh.health`). On
SIGTERM (or SIGINT) it stops reading, lets in-flight handlers finish within
BLUEPRINT_DRAIN_GRACE_SECONDS and exits 0; a handler still running after that is
cancelled, and its message (never acknowledged) is taken over by another worker after
the visibility timeout. Nothing is lost either way: that is at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import signal
import socket

import grpc.aio
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from blueprint.infra.queue import depth
from blueprint.infra.queue.consumer import Consumer
from blueprint.infra.queue.gate import LiveColorGate
from blueprint.infra.queue.metrics import QueueMetrics
from blueprint.infra.queue.queue import WorkQueue
from blueprint.infra.queue.registry import HandlerSpec, WorkerContext
from blueprint.infra.queue.scheduler import promote_due_forever
from blueprint.infra.queue.settings import consumer_options, retry_policy
from blueprint.mesh import ready
from blueprint.mesh.discovery import Instance, open_registry
from blueprint.mesh.health import Dependency, DependencyChecker, ServingHealth
from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)

EXIT_FAILED = 1


def consumer_prefix(name: str, instance_id: str | None) -> str:
    """Stable across restarts when the instance id is (as `blueprint up` sets it)."""
    raw = instance_id or f"{name}-{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", raw)[:90]


async def work(
    name: str, spec: HandlerSpec, settings: Settings, *, redis_url: str, concurrency: int
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    instance_id = consumer_prefix(name, settings.instance_id)
    redis = aioredis.Redis.from_url(redis_url, health_check_interval=10)
    queue = WorkQueue(redis, prefix=settings.redis_prefix)
    metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.bind_host)
    health = HealthServicer()
    health_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
    reflection.enable_server_reflection(
        [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        health_server,
    )
    health_port = health_server.add_insecure_port(f"{settings.bind_host}:{settings.port}")
    await health_server.start()
    registry = open_registry(settings, redis_url=redis_url)
    instance = Instance(
        service=name,
        instance_id=instance_id,
        address=f"{settings.advertise_host}:{health_port}",
        metadata={"metrics_port": str(metrics_server.server_port), "kind": "worker"},
    )

    async def serving_changed(serving: bool) -> None:
        nonlocal instance
        instance = dataclasses.replace(instance, serving=serving)
        await registry.register(instance)

    serving_health = ServingHealth(health, [name], on_change=serving_changed)
    checker = DependencyChecker(
        [Dependency(f"{name}/redis", redis.ping)],
        serving_health.dependencies_changed,
        interval_seconds=settings.health_check_interval_seconds,
        timeout_seconds=settings.health_check_timeout_seconds,
        failures_to_down=settings.health_failures_to_down,
    )
    registered = False
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await queue.ensure_group(spec.stream, spec.group)
        except RedisError as exc:
            log.error("cannot reach Redis", extra={"error": str(exc)})
            return EXIT_FAILED
        context = WorkerContext(name, instance_id, settings, redis, queue)
        metrics = QueueMetrics()  # once per process: the default registry refuses twins
        async with spec.factory(context) as handler:
            consumers = [
                Consumer(
                    queue,
                    spec.stream,
                    spec.group,
                    f"{instance_id}-{n}",
                    handler,
                    retry=spec.retry or retry_policy(settings),
                    options=consumer_options(settings),
                    metrics=metrics,
                )
                for n in range(1, concurrency + 1)
            ]
            await serving_health.start()
            registered = True  # from here its heartbeat keeps trying, Redis or not
            try:
                await registry.register(instance)
            except RedisError as exc:
                log.warning("cannot register in discovery yet", extra={"error": str(exc)})
            checker.start()
            bound = ready.Bound(os.getpid(), health_port, metrics_server.server_port)
            ready.report(settings.ready_file, bound)
            run = functools.partial(
                _run,
                consumers,
                queue,
                spec,
                settings,
                metrics,
                metrics_port=metrics_server.server_port,
            )
            gate = LiveColorGate.from_settings(settings)
            # Blue-green: a worker of the idle colour is up and healthy, but consumes
            # only while its colour is live (gate.py).
            return await (run(stop) if gate is None else gate.run_while_live(run, stop))
    finally:
        await checker.aclose()
        await serving_health.drain()
        if registered:
            with contextlib.suppress(RedisError):
                await registry.deregister(instance)
        await registry.close()
        await health_server.stop(None)
        with contextlib.suppress(Exception):
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        await redis.aclose()
        await asyncio.to_thread(metrics_server.shutdown)
        log.info("stopped")


async def _run(
    consumers: list[Consumer],
    queue: WorkQueue,
    spec: HandlerSpec,
    settings: Settings,
    metrics: QueueMetrics,
    stop: asyncio.Event,
    metrics_port: int,
) -> int:
    tasks = [asyncio.create_task(c.run(stop), name=c.name) for c in consumers]
    tasks.append(
        asyncio.create_task(
            promote_due_forever(
                queue, spec.stream, stop, interval_seconds=settings.queue_promote_interval_seconds
            ),
            name="promote due retries",
        )
    )
    tasks.append(
        asyncio.create_task(
            depth.sample_forever(
                queue,
                spec.stream,
                spec.group,
                metrics,
                stop,
                interval_seconds=settings.queue_depth_interval_seconds,
            ),
            name="sample queue depth",
        )
    )
    log.info(
        "working",
        extra={
            "stream": spec.stream,
            "group": spec.group,
            "concurrency": len(consumers),
            "metrics_port": metrics_port,
        },
    )
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    crashed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    for task in crashed:
        log.error("a consumer crashed", exc_info=task.exception(), extra={"task": task.get_name()})
    stop.set()
    stopping.cancel()
    grace = settings.drain_grace_seconds
    log.info("draining", extra={"grace_seconds": grace})
    _, late = await asyncio.wait(tasks, timeout=grace)
    if late:
        log.warning(
            "grace period over; unfinished messages will be redelivered",
            extra={"cancelled": sorted(t.get_name() for t in late)},
        )
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    for consumer in consumers:
        await consumer.forget()
    return EXIT_FAILED if crashed else 0
