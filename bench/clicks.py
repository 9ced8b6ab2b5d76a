"""Can one click worker keep up with three shortener replicas resolving at full speed?

Side by side in one run, on one Redis and one database:

1. Resolve calls/s of one real `blueprint serve shortener` replica over gRPC (closed
   loop, raw channel, hot codes from the near cache): each call publishes a click, as
   in production. Three replicas make three times its clicks: the rate to keep up with.
   Measured one replica at a time, since the machine cannot run three at full speed
   beside the worker without each slowing the others.
2. Clicks/s of one `blueprint work shortener-clicks` process taking one message at a
   time (BLUEPRINT_QUEUE_BATCH_SIZE=1), the pre-batching figure: timed over a while on
   the replica's clicks topped up with more of the same.
3. The same worker with the default settings (batches), draining all that is left.

A worker is timed from the moment it reports ready, over the clicks that left the
stream (entries are deleted as they are acknowledged). Beside each rate, the CPU time
the process spent per call or click (from /proc): on a shared, loaded machine the wall
rates swing with the neighbours, while CPU per click against CPU per Resolve says
whether a worker with a core of its own keeps up with three replicas with one each.
At the end every link's count is checked against the clicks published: exactly once,
or the run fails.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import grpc.aio
import redis.asyncio as aioredis

from bench.common import LOG_DIR, closed_loop, print_table, progress
from blueprint.infra.queue import Priority, WorkQueue
from blueprint.local.processes import ready_env, wait_ready
from blueprint.shortener.clicks import CLICK_GROUP, CLICK_STREAM, Click
from blueprint.shortener.store import ShortenerStore
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub

PREFIX = "bclicks"
REPLICAS = 3  # the shortener replicas one worker must keep up with


@dataclass(frozen=True)
class ClickParameters:
    resolve_seconds: float = 5.0
    concurrency: int = 16
    batched_backlog: int = 10_000  # clicks the batched worker drains (all that is left)
    unbatched_backlog: int = 5_000  # one at a time is slow: timed over a while, not drained
    unbatched_seconds: float = 10.0
    start_timeout_seconds: float = 60.0  # a loaded machine starts processes slowly


QUICK_CLICKS = ClickParameters(
    resolve_seconds=0.5, batched_backlog=300, unbatched_backlog=100, unbatched_seconds=1.0
)


def _env(redis_url: str, database_url: str, name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    env.update(
        BLUEPRINT_DISCOVERY="static",
        BLUEPRINT_INSTANCE_ID=name,
        BLUEPRINT_REDIS_URL=redis_url,
        BLUEPRINT_REDIS_PREFIX=PREFIX,
        BLUEPRINT_DATABASE_URL=database_url,
        BLUEPRINT_SHORTENER_PURGE_INTERVAL_SECONDS="0",
        BLUEPRINT_PROPAGATION_SECONDS="0",
        BLUEPRINT_DRAIN_GRACE_SECONDS="2",
        BLUEPRINT_MAX_CONNECTION_AGE_SECONDS="3600",
    )
    env.update(extra)
    return env


class Process:
    """A `blueprint` process, started and waited for; stopped with SIGTERM."""

    def __init__(self, args: list[str], env: Mapping[str, str], timeout: float) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        name = env["BLUEPRINT_INSTANCE_ID"]
        self.log_path = LOG_DIR / f"{name}.log"
        ready_file = LOG_DIR / f"{name}.ready.json"
        ready_file.unlink(missing_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "blueprint.cli", *args],
                env={**env, **ready_env(ready_file)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.port = wait_ready(self.process, ready_file, self.log_path, timeout).port
        except Exception:
            self.stop()
            raise

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _backlog(queue: WorkQueue) -> int:
    return sum((await queue.backlog(CLICK_STREAM)).values())


async def _settled_backlog(queue: WorkQueue) -> int:
    """The backlog once the replica's background publishes have all landed."""
    last = -1
    while (now := await _backlog(queue)) != last:
        last = now
        await asyncio.sleep(0.5)
    return now


@dataclass(frozen=True)
class Rate:
    count: int  # calls or clicks
    seconds: float
    cpu_seconds: float  # of the process doing the work, over the same window

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_ms_each(self) -> float:
        return self.cpu_seconds / self.count * 1000 if self.count else float("nan")

    @property
    def per_cpu_second(self) -> float:
        return self.count / self.cpu_seconds if self.cpu_seconds else float("nan")


async def _resolve(replica: Process, codes: list[str], params: ClickParameters) -> Rate:
    rng = random.Random(11)
    warmup = min(1.0, params.resolve_seconds / 5)
    cpu: list[float] = []

    async def cpu_meter() -> None:  # the replica's CPU over the measuring window only
        await asyncio.sleep(warmup)
        cpu.append(replica.cpu_seconds())
        await asyncio.sleep(params.resolve_seconds)
        cpu.append(replica.cpu_seconds())

    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
        stub = ShortenerStub(channel)
        sample, _ = await asyncio.gather(
            closed_loop(
                lambda: stub.Resolve(pb.ResolveRequest(code=rng.choice(codes))),
                concurrency=params.concurrency,
                warmup_seconds=warmup,
                duration_seconds=params.resolve_seconds,
            ),
            cpu_meter(),
        )
    return Rate(sample.calls, sample.window_seconds, cpu[1] - cpu[0])


async def _top_up(queue: WorkQueue, codes: list[str], link_ids: dict[str, int], count: int) -> int:
    """`count` more clicks, as Resolve publishes them (100 in flight at a time)."""
    now = datetime.now(UTC)
    for start in range(0, count, 100):
        await asyncio.gather(
            *(
                queue.publish(
                    CLICK_STREAM,
                    Click(code, link_ids[code], now).payload(),
                    priority=Priority.LOW,
                )
                for code in (codes[n % len(codes)] for n in range(start, min(count, start + 100)))
            )
        )
    return count


async def _drain(
    queue: WorkQueue, env: Mapping[str, str], params: ClickParameters, seconds: float | None = None
) -> Rate:
    """Start a worker: the clicks it counted, over the whole backlog or, with `seconds`,
    over what it counted in that time (the rest is left waiting)."""
    worker = Process(["work", "shortener-clicks"], env, params.start_timeout_seconds)
    try:
        started, cpu = time.perf_counter(), worker.cpu_seconds()
        waiting = await _backlog(queue)
        until = started + (seconds if seconds is not None else float("inf"))
        while time.perf_counter() < until and (
            await _backlog(queue) or await queue.pending(CLICK_STREAM, CLICK_GROUP)
        ):
            if worker.process.poll() is not None:
                raise RuntimeError(f"the worker died: see {worker.log_path}")
            await asyncio.sleep(0.01)
        # Entries are deleted as they are acknowledged: what left the stream was counted.
        counted = waiting - await _backlog(queue)
        return Rate(counted, time.perf_counter() - started, worker.cpu_seconds() - cpu)
    finally:
        worker.stop()


async def _counted(store: ShortenerStore, codes: list[str]) -> int:
    return sum([(await store.click_stats(code, date(2000, 1, 1))).total for code in codes])


async def measure(
    redis_url: str, database_url: str, store: ShortenerStore, codes: list[str],
    params: ClickParameters,
) -> dict[str, object]:  # fmt: skip
    """The figures, printed as a table; RuntimeError if a click was lost or doubled."""
    redis = aioredis.Redis.from_url(redis_url)
    queue = WorkQueue(redis, prefix=PREFIX)
    link_ids = {}
    for code in codes:
        link = await store.find_link(code)
        assert link is not None
        link_ids[code] = link.id
    before = await _counted(store, codes)
    try:
        await queue.ensure_group(CLICK_STREAM, CLICK_GROUP)
        progress("clicks: Resolve on one shortener replica over gRPC")
        replica = Process(
            ["serve", "shortener"],
            _env(redis_url, database_url, "bench-shortener-1"),
            params.start_timeout_seconds,
        )
        try:
            resolve = await _resolve(replica, codes, params)
        finally:
            replica.stop()
        from_resolve = await _settled_backlog(queue)
        published = from_resolve + await _top_up(queue, codes, link_ids, params.unbatched_backlog)
        progress(f"clicks: one worker, one at a time, for up to {params.unbatched_seconds:g} s")
        single = await _drain(
            queue,
            _env(redis_url, database_url, "bench-clicks-single", BLUEPRINT_QUEUE_BATCH_SIZE="1"),
            params,
            params.unbatched_seconds,
        )
        more = max(0, params.batched_backlog - await _backlog(queue))
        published += await _top_up(queue, codes, link_ids, more)
        progress(f"clicks: one worker, batches, draining {await _backlog(queue):,} clicks")
        batched = await _drain(queue, _env(redis_url, database_url, "bench-clicks-batched"), params)
        counted = await _counted(store, codes) - before
    finally:
        await redis.aclose()
    if counted != published:
        raise RuntimeError(f"{published:,} clicks published, {counted:,} counted")
    return _report(resolve, from_resolve, batched, single, counted, params)


def _report(
    resolve: Rate, from_resolve: int, batched: Rate, single: Rate, counted: int,
    params: ClickParameters,
) -> dict[str, object]:  # fmt: skip
    target = resolve.per_second * REPLICAS
    cpu_target = resolve.per_cpu_second * REPLICAS  # three replicas with a core each

    def row(name: str, rate: Rate, vs: str, cpu_vs: str) -> list[str]:
        return [
            name,
            f"{rate.count:,}",
            f"{rate.per_second:,.0f}",
            vs,
            f"{rate.cpu_ms_each:.3f}",
            f"{rate.per_cpu_second:,.0f}",
            cpu_vs,
        ]

    rows = [
        row("Resolve, 1 replica (gRPC)", resolve, "", ""),
        [
            f"Resolve, {REPLICAS} replicas (x{REPLICAS})",
            "",
            f"{target:,.0f}",
            "1.00x",
            "",
            f"{cpu_target:,.0f}",
            "1.00x",
        ],
        row(
            "worker, batches (defaults)",
            batched,
            f"{batched.per_second / target:.2f}x",
            f"{batched.per_cpu_second / cpu_target:.2f}x",
        ),
        row(
            "worker, one at a time",
            single,
            f"{single.per_second / target:.2f}x",
            f"{single.per_cpu_second / cpu_target:.2f}x",
        ),
    ]
    print_table(
        f"Clicks: one click worker vs the Resolve calls that make its clicks"
        f" (concurrency {params.concurrency}, {params.resolve_seconds:g} s of Resolve)",
        [
            "",
            "calls / clicks",
            "per second",
            f"vs {REPLICAS} replicas",
            "CPU ms each",
            "per CPU-second",
            f"vs {REPLICAS} replicas",
        ],
        rows,
        [
            f"Each Resolve publishes a click; {REPLICAS} replicas make {REPLICAS}x the clicks of"
            " one, measured alone.",
            "Worker rows: a `blueprint work shortener-clicks` process draining a backlog;"
            f" {from_resolve:,} of its clicks came from the Resolve run.",
            "per CPU-second: calls or clicks per second of the process's own CPU time; the"
            " last column is what a worker with one core",
            f"  does beside {REPLICAS} replicas with one core each (the database and Redis"
            " not counted).",
            f"Counted exactly once: {counted:,} clicks published, {counted:,} counted.",
        ],
    )
    return {
        "resolve_calls_per_second_per_replica": round(resolve.per_second, 1),
        "replicas": REPLICAS,
        "clicks_per_second_to_keep_up": round(target, 1),
        "worker_clicks_per_second_batched": round(batched.per_second, 1),
        "worker_clicks_per_second_one_at_a_time": round(single.per_second, 1),
        "batched_over_replicas": round(batched.per_second / target, 2),
        "one_at_a_time_over_replicas": round(single.per_second / target, 2),
        "keeps_up": batched.per_second >= target,
        "cpu_ms_per_resolve": round(resolve.cpu_ms_each, 4),
        "cpu_ms_per_click_batched": round(batched.cpu_ms_each, 4),
        "cpu_ms_per_click_one_at_a_time": round(single.cpu_ms_each, 4),
        "batched_over_replicas_per_cpu_second": round(batched.per_cpu_second / cpu_target, 2),
        "one_at_a_time_over_replicas_per_cpu_second": round(single.per_cpu_second / cpu_target, 2),
        "clicks_counted": counted,
    }
