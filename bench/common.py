"""What both benchmarks share: diag servers, a closed-loop driver, percentiles, tables, JSON."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import grpc.aio

from blueprint.local.processes import StartFailed, ready_env, wait_ready

# Overridable so the smoke test leaves the working tree alone.
RESULTS_DIR = Path(
    os.environ.get("BLUEPRINT_BENCH_RESULTS", Path(__file__).resolve().parent / "results")
)
LOG_DIR = RESULTS_DIR / "logs"

ReplyT = TypeVar("ReplyT")


# --- diag server processes -------------------------------------------------


@dataclass
class DiagServer:
    instance_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_file: Path
    port: int = 0  # known once it has reported ready

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _server_env(instance_id: str, ready_file: Path, extra: Mapping[str, str]) -> dict[str, str]:
    # The caller's BLUEPRINT_* settings would make runs differ between shells.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    env.update(ready_env(ready_file))
    env.update(
        BLUEPRINT_DISCOVERY="static",  # clients are handed the address; nothing to announce
        BLUEPRINT_INSTANCE_ID=instance_id,
        # No other clients need telling, so stopping need not wait for them.
        BLUEPRINT_PROPAGATION_SECONDS="0",
        BLUEPRINT_DRAIN_GRACE_SECONDS="1",
        # The default 30 s age would send GOAWAY mid-run, and the reconnect
        # would be charged to whichever mode happened to be running.
        BLUEPRINT_MAX_CONNECTION_AGE_SECONDS="3600",
    )
    env.update(extra)
    return env


# What serves diag unless a benchmark says otherwise.
BLUEPRINT_SERVE_DIAG = ("blueprint.cli", "serve", "diag")


def _spawn(
    instance_id: str,
    extra: Mapping[str, str],
    module_args: Sequence[str],
    launcher: Sequence[str] = (),
) -> DiagServer:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{instance_id}.log"
    ready_file = LOG_DIR / f"{instance_id}.ready.json"
    ready_file.unlink(missing_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*launcher, sys.executable, "-m", *module_args],
            env=_server_env(instance_id, ready_file, extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return DiagServer(instance_id, process, log_path, ready_file)


def _wait_serving(server: DiagServer, timeout: float = 20.0) -> None:
    """Until it reports its port (written once its health says SERVING)."""
    try:
        server.port = wait_ready(server.process, server.ready_file, server.log_path, timeout).port
    except StartFailed as failed:
        tail = server.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{server.instance_id} did not start ({failed}):\n{tail}") from None


def _stop(servers: Sequence[DiagServer], grace_seconds: float = 10.0) -> None:
    for server in servers:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for server in servers:
        try:
            server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def diag_servers(
    extra_env: Mapping[str, Mapping[str, str]],
    commands: Mapping[str, Sequence[str]] | None = None,
    *,
    launcher: Sequence[str] = (),
    start_timeout: float = 20.0,
) -> Iterator[list[DiagServer]]:
    """One `blueprint serve diag` per instance id, with its extra env (or the module and
    arguments `commands` names for it), run by `launcher` (e.g. valgrind) when given;
    all stopped on exit, whatever ends the block."""
    servers: list[DiagServer] = []
    commands = commands or {}
    try:
        # Spawn all before waiting for any: their start-ups overlap.
        for instance_id, extra in extra_env.items():
            servers.append(
                _spawn(
                    instance_id,
                    extra,
                    commands.get(instance_id, BLUEPRINT_SERVE_DIAG),
                    launcher,
                )
            )
        for server in servers:
            _wait_serving(server, start_timeout)
        yield servers
    finally:
        _stop(servers)


# --- closed-loop load ------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` so far, in nanosecond resolution (Linux
    schedstat; /proc/PID/stat counts in 10 ms ticks, too coarse for a short window)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the sample at or below it."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1]


@dataclass
class Sample:
    """The successful calls that started inside the measuring window."""

    window_seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    # This process's CPU time (all threads, grpc's included) over the window:
    # the client's cost per call shows even when the server is the bottleneck.
    client_cpu_seconds: float = 0.0
    # The server's CPU time (all threads) over the window, when the caller watched it.
    server_cpu_seconds: float = math.nan

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.calls / self.window_seconds

    def latency_ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000

    @property
    def client_cpu_us_per_call(self) -> float:
        return self.client_cpu_seconds / self.calls * 1e6 if self.calls else math.nan

    @property
    def server_cpu_us_per_call(self) -> float:
        return self.server_cpu_seconds / self.calls * 1e6 if self.calls else math.nan

    @classmethod
    def pooled(cls, samples: Sequence[Sample]) -> Sample:
        """Windows of one mode on several processes as one, end to end: throughput is
        the mean over the windows, latencies and CPU per call are over all their calls."""
        pooled = cls(window_seconds=sum(s.window_seconds for s in samples))
        for sample in samples:
            pooled.latencies.extend(sample.latencies)
            pooled.errors += sample.errors
            pooled.served_by.update(sample.served_by)
            pooled.client_cpu_seconds += sample.client_cpu_seconds
        pooled.server_cpu_seconds = sum(s.server_cpu_seconds for s in samples)
        pooled.latencies.sort()
        return pooled

    def summary(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "window_seconds": self.window_seconds,
            "throughput_per_second": round(self.throughput, 1),
            "p50_ms": round(self.latency_ms(50), 3),
            "p99_ms": round(self.latency_ms(99), 3),
            "p999_ms": round(self.latency_ms(99.9), 3),
            "client_cpu_us_per_call": round(self.client_cpu_us_per_call, 1),
        } | (
            {}
            if math.isnan(self.server_cpu_seconds)
            else {"server_cpu_us_per_call": round(self.server_cpu_us_per_call, 1)}
        )


async def closed_loop(
    call: Callable[[], Awaitable[ReplyT]],
    *,
    concurrency: int,
    warmup_seconds: float,
    duration_seconds: float,
    served_by: Callable[[ReplyT], str] | None = None,
    server_pid: int | None = None,
) -> Sample:
    """`concurrency` workers each issue the next call as soon as the last one returns.

    Calls started during the warm-up are not recorded (connections, caches
    and load estimates settle there); throughput counts calls started inside
    the window, so the few still in flight at its end do not stretch it.
    """
    sample = Sample(window_seconds=duration_seconds)
    measure_from = time.perf_counter() + warmup_seconds
    measure_until = measure_from + duration_seconds

    async def worker() -> None:
        while (started := time.perf_counter()) < measure_until:
            try:
                reply = await call()
            except grpc.aio.AioRpcError:
                if started >= measure_from:
                    sample.errors += 1
                continue
            elapsed = time.perf_counter() - started
            if started >= measure_from:
                sample.latencies.append(elapsed)
                if served_by is not None:
                    sample.served_by[served_by(reply)] += 1

    async def cpu_meter() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu_from = time.process_time()
        server_from = process_cpu_seconds(server_pid) if server_pid else 0.0
        await asyncio.sleep(max(0.0, measure_until - time.perf_counter()))
        sample.client_cpu_seconds = time.process_time() - cpu_from
        if server_pid:
            sample.server_cpu_seconds = process_cpu_seconds(server_pid) - server_from

    await asyncio.gather(cpu_meter(), *(worker() for _ in range(concurrency)))
    return sample


# --- output ------------------------------------------------------------------


def progress(message: str) -> None:
    # stderr, so that stdout holds only the tables.
    print(message, file=sys.stderr, flush=True)


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()
) -> None:
    """First column left-aligned (names), the rest right-aligned (figures)."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        figures = (cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))
        return "  ".join([first.ljust(widths[0]), *figures])

    print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    for note in notes:
        print(note)


def machine() -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }


def write_result(name: str, parameters: Mapping[str, object], figures: object) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": dict(parameters),
        "figures": figures,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


class RoundsParameters(Protocol):
    concurrency: int
    warmup_seconds: float
    rounds: int
    settle_seconds: float
    duration_seconds: float


async def interleaved_rounds(
    name: str,
    calls: Mapping[str, Callable[[], Awaitable[object]]],
    params: RoundsParameters,
    server_pids: Mapping[str, int] | None = None,
) -> dict[str, list[Sample]]:
    """Each mode warmed once, then `params.rounds` rounds of one closed-loop window per
    mode, the order rotated each round: every mode meets the same machine noise, and
    a ratio is taken between windows a second apart."""
    modes = list(calls)
    progress(f"{name}: warming up")
    for mode in modes:
        await closed_loop(
            calls[mode],
            concurrency=params.concurrency,
            warmup_seconds=0,
            duration_seconds=params.warmup_seconds,
        )
    samples: dict[str, list[Sample]] = {mode: [] for mode in modes}
    for round_index in range(params.rounds):
        progress(f"{name}: round {round_index + 1}/{params.rounds}")
        shift = round_index % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            sample = await closed_loop(
                calls[mode],
                concurrency=params.concurrency,
                warmup_seconds=params.settle_seconds,
                duration_seconds=params.duration_seconds,
                server_pid=None if server_pids is None else server_pids[mode],
            )
            samples[mode].append(sample)
    return samples
