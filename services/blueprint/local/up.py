"""`blueprint up`: the whole mesh on one machine, in the foreground.

Starts discovery's Redis (embedded unless BLUEPRINT_REDIS_URL is set), runs
every service's database migrations, starts every service as N replicas and
every queue worker once, on free ports, waits until each answers its health
check, prints where everything is, restarts a process that dies, and on Ctrl-C
or SIGTERM stops all of it gracefully, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from blueprint import catalog
from blueprint.infra.queue import registry as workers
from blueprint.infra.sql import migrations
from blueprint.local import state
from blueprint.local.embedded_redis import EmbeddedRedis
from blueprint.local.processes import free_port, spawn, stop_all
from blueprint.local.status import health_of
from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)

RESTART_BACKOFF_SECONDS = 1.0


@dataclass
class Replica:
    service: str
    number: int
    port: int
    metrics_port: int
    log_path: Path
    command: str = "serve"  # or "work", for a queue worker
    state_dir: Path = Path(".blueprint")
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    health: str = "STARTING"
    exited_at: float | None = field(default=None)

    @property
    def instance_id(self) -> str:
        return f"{self.service}-{self.number}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _replica_env(replica: Replica, redis_url: str, state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BLUEPRINT_STATE_DIR=str(state_dir),
        BLUEPRINT_DISCOVERY="redis",
        BLUEPRINT_REDIS_URL=redis_url,
        BLUEPRINT_PORT=str(replica.port),
        BLUEPRINT_METRICS_PORT=str(replica.metrics_port),
        BLUEPRINT_INSTANCE_ID=replica.instance_id,
    )
    return env


def _start(replica: Replica, redis_url: str) -> None:
    argv = [sys.executable, "-m", "blueprint.cli", replica.command, replica.service]
    env = _replica_env(replica, redis_url, replica.state_dir)
    replica.process = spawn(argv, env, replica.log_path)
    replica.exited_at = None


async def _wait_healthy(replicas: list[Replica], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(replicas)
    while pending and time.monotonic() < deadline:
        results = await asyncio.gather(*(health_of(r.address) for r in pending))
        for replica, result in zip(pending, results, strict=True):
            replica.health = result
        pending = [r for r in pending if r.health != "SERVING"]
        dead = [r for r in pending if r.process is not None and r.process.poll() is not None]
        if dead:
            names = ", ".join(f"{r.instance_id} (log: {r.log_path})" for r in dead)
            raise RuntimeError(f"replicas exited during start: {names}")
        if pending:
            await asyncio.sleep(0.2)


def _table(replicas: list[Replica], redis_url: str, embedded: bool) -> str:
    rows = [("SERVICE", "REPLICA", "ADDRESS", "HEALTH", "METRICS")]
    rows += [
        (
            r.service if r.command == "serve" else f"{r.service} (worker)",
            r.instance_id,
            r.address,
            r.health,
            f"http://127.0.0.1:{r.metrics_port}/metrics",
        )
        for r in replicas
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    where = "embedded redis-server" if embedded else "BLUEPRINT_REDIS_URL"
    lines += [
        "",
        f"discovery: {redis_url} ({where})",
        "try, in another shell:  . .venv/bin/activate && "
        'blueprint call diag Echo \'{"payload":"hi"}\'',
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def _migrate(settings: Settings) -> None:
    """Every service's schema, before any replica of it starts (as a Helm hook would)."""
    for name in catalog.SERVICES:
        if migrations.has_migrations(name):
            print(f"migrating {name} ...", flush=True)
            await migrations.migrate_from_settings(settings, name)


async def _supervise(replicas: list[Replica], redis_url: str, stop: asyncio.Event) -> None:
    """Restart replicas that die, as a Deployment would, until asked to stop."""
    while not stop.is_set():
        for replica in replicas:
            process = replica.process
            if process is None or process.poll() is None:
                continue
            now = time.monotonic()
            if replica.exited_at is None:
                replica.exited_at = now
                print(
                    f"{replica.instance_id} exited with code {process.returncode}; "
                    f"restarting (log: {replica.log_path})",
                    flush=True,
                )
            elif now - replica.exited_at >= RESTART_BACKOFF_SECONDS * (1 + replica.restarts):
                replica.restarts += 1
                _start(replica, redis_url)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


async def run(settings: Settings) -> int:
    state_dir = settings.state_dir.resolve()
    logs = state_dir / "logs"
    if state.read(state_dir) is not None:
        print(f"blueprint up is already running here ({state_dir / state.STATE_FILE})")
        return 1
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(state_dir / "redis")
        redis_url = embedded.start()
    replicas = [
        Replica(name, n, free_port(), free_port(), logs / f"{name}-{n}.log", state_dir=state_dir)
        for name in catalog.SERVICES
        for n in range(1, settings.replicas + 1)
    ]
    replicas += [
        Replica(
            name, 1, free_port(), free_port(), logs / f"{name}-1.log", "work", state_dir=state_dir
        )
        for name in sorted({*workers.WORKERS, *settings.worker_handlers})
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    state.write(state_dir, state.UpState(pid=os.getpid(), redis_url=redis_url))
    try:
        await _migrate(settings.model_copy(update={"state_dir": state_dir}))
        for replica in replicas:
            _start(replica, redis_url)
        await _wait_healthy(replicas, timeout=30.0)
        print(_table(replicas, redis_url, embedded is not None), flush=True)
        await _supervise(replicas, redis_url, stop)
        print("stopping: draining replicas ...", flush=True)
        return 0
    finally:
        grace = settings.drain_grace_seconds + settings.propagation_seconds + 5.0
        children = [r.process for r in replicas if r.process is not None]
        killed = await asyncio.to_thread(stop_all, children, grace)
        if killed:
            print(f"killed replicas that outlived the grace period: {killed}", flush=True)
        if embedded is not None:
            embedded.stop()
        state.remove(state_dir)
        print("stopped.", flush=True)
