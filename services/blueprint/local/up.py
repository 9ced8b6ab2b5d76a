"""`blueprint up`: the whole mesh on one machine, in the foreground.

Starts discovery's Redis (embedded unless BLUEPRINT_REDIS_URL is set), runs
every service's database migrations, starts every service as N replicas and
every queue worker once (each binds free ports itself and reports them, see
`processes`), waits until each is ready, prints where everything is, restarts a
process that dies (`supervisor`), and on Ctrl-C or SIGTERM stops all of it
gracefully, leaving no process behind. A replica that keeps failing ends `up`
with one line saying which, why (its log's last line) and where its log is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from blueprint import catalog
from blueprint.infra.queue import registry as workers
from blueprint.infra.sql import migrations
from blueprint.local import state
from blueprint.local.embedded_redis import EmbeddedRedis
from blueprint.local.processes import stop_all
from blueprint.local.status import health_of
from blueprint.local.supervisor import Replica, RestartPolicy, Supervisor
from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)

EXIT_FAILED = 1
_POLL_SECONDS = 0.2


def _replicas(settings: Settings, state_dir: Path) -> list[Replica]:
    def replica(name: str, number: int, command: str = "serve") -> Replica:
        instance = f"{name}-{number}"
        return Replica(
            name,
            number,
            state_dir / "logs" / f"{instance}.log",
            state_dir / "ready" / f"{instance}.json",
            command,
        )

    found = [replica(name, n) for name in catalog.SERVICES for n in range(1, settings.replicas + 1)]
    found += [
        replica(name, 1, "work") for name in sorted({*workers.WORKERS, *settings.worker_handlers})
    ]
    return found


def _replica_env(redis_url: str, state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BLUEPRINT_STATE_DIR=str(state_dir),
        BLUEPRINT_DISCOVERY="redis",
        BLUEPRINT_REDIS_URL=redis_url,
    )
    return env


def _table(replicas: list[Replica], redis_url: str, embedded: bool) -> str:
    rows = [("SERVICE", "REPLICA", "ADDRESS", "HEALTH", "METRICS")]
    rows += [(r.name, r.instance_id, r.address, r.health, r.metrics_url) for r in replicas]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
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


async def _supervise(supervisor: Supervisor, stop: asyncio.Event, *, until_ready: bool) -> bool:
    """Steps the supervisor until every replica is ready (or, after that, until `stop`);
    False as soon as it gave up on one."""
    while not stop.is_set() and not (until_ready and supervisor.all_ready):
        supervisor.step()
        if supervisor.given_up:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_POLL_SECONDS):
                await stop.wait()
    return True


async def _check_health(replicas: list[Replica]) -> None:
    results = await asyncio.gather(*(health_of(r.address) for r in replicas))
    for replica, result in zip(replicas, results, strict=True):
        replica.health = result


async def run(settings: Settings) -> int:
    state_dir = settings.state_dir.resolve()
    if state.read(state_dir) is not None:
        print(f"blueprint up is already running here ({state_dir / state.STATE_FILE})")
        return EXIT_FAILED
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(state_dir / "redis")
        redis_url = embedded.start()
    supervisor = Supervisor(
        _replicas(settings, state_dir),
        _replica_env(redis_url, state_dir),
        RestartPolicy(settings.restart_backoff_seconds, attempts=settings.restart_attempts),
        start_timeout=settings.start_timeout_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    state.write(state_dir, state.UpState(pid=os.getpid(), redis_url=redis_url))
    try:
        try:
            await _migrate(settings.model_copy(update={"state_dir": state_dir}))
        except Exception as error:  # one line for the user; the cause is theirs to fix
            print(f"blueprint up: migrations failed: {type(error).__name__}: {error}", flush=True)
            return EXIT_FAILED
        supervisor.start_all()
        if not await _supervise(supervisor, stop, until_ready=True):
            return EXIT_FAILED
        if stop.is_set():
            return 0
        await _check_health(supervisor.replicas)
        print(_table(supervisor.replicas, redis_url, embedded is not None), flush=True)
        if not await _supervise(supervisor, stop, until_ready=False):
            return EXIT_FAILED
        print("stopping: draining replicas ...", flush=True)
        return 0
    finally:
        grace = settings.drain_grace_seconds + settings.propagation_seconds + 5.0
        killed = await asyncio.to_thread(stop_all, supervisor.processes, grace)
        if killed:
            print(f"killed replicas that outlived the grace period: {killed}", flush=True)
        if embedded is not None:
            embedded.stop()
        state.remove(state_dir)
        print("stopped.", flush=True)
