"""Server cost per call: `blueprint serve diag` beside a bare `grpc.aio` server with the
same servicer, each driven by the same raw `grpc.aio` client.

Every server is its own process; one client process drives each in turn (Echo, the
same payload and concurrency), in rounds whose order rotates, and the ratio to the
bare server is taken within each round before the median (as in mesh_overhead: modes
measured seconds apart share the machine's mood). Besides calls/s, each row gives the
server process's CPU time per call (all its threads, from Linux schedstat): on a
shared machine throughput swings with the neighbours, CPU per call much less.

Each kind of server runs as several processes, and a round's figure for a kind is
over all of them: two processes of the very same server, measured side by side,
differ by up to 20 % here for the whole of their lives (where the kernel places
their threads, their memory layout), so one process per kind would measure that
draw rather than the server.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import grpc.aio

from bench.common import (
    Sample,
    diag_servers,
    interleaved_rounds,
    print_table,
    progress,
    write_result,
)
from blueprint.diag.v1.diag_pb2 import EchoRequest
from blueprint.diag.v1.diag_pb2_grpc import DiagnosticsStub

NAME = "server_cost"
GOAL_RATIO = 1.0  # issue 8: blueprint serve, telemetry on >= a bare grpc.aio server
BARE = "bare grpc.aio, asyncio loop"
ON = "blueprint serve, metrics + unsampled spans"
OFF = "blueprint serve, telemetry off"
TRACED = "blueprint serve, every call traced"
# Mode -> (instance id, environment, module and arguments; None: blueprint serve diag).
SERVERS: dict[str, tuple[str, dict[str, str], Sequence[str] | None]] = {
    BARE: ("diag-bare", {}, ("bench.bare_server",)),
    ON: ("diag-telemetry-on", {"BLUEPRINT_TRACE_SAMPLING_RATIO": "0"}, None),
    OFF: ("diag-telemetry-off", {"BLUEPRINT_TELEMETRY_ENABLED": "false"}, None),
    # The settings' default ratio is 1; with no exporter set the spans go nowhere.
    TRACED: ("diag-traced", {"BLUEPRINT_TRACE_SAMPLING_RATIO": "1"}, None),
}
MODES = tuple(SERVERS)


@dataclass(frozen=True)
class Parameters:
    concurrency: int = 16
    payload_bytes: int = 64
    warmup_seconds: float = 1.0  # per mode, once, before the rounds
    # Many short rounds: a ratio is taken between windows a second apart, and the
    # median of many such pairs is what a shared machine's swings move least.
    rounds: int = 8
    settle_seconds: float = 0.15
    duration_seconds: float = 0.5
    timeout_seconds: float = 10.0
    processes: int = 3  # per kind of server


FULL = Parameters()
QUICK = Parameters(
    warmup_seconds=0.1, rounds=1, settle_seconds=0.05, duration_seconds=0.2, processes=1
)


@dataclass(frozen=True)
class Target:
    address: str
    pid: int


def _process_key(mode: str, index: int) -> str:
    return f"{mode} #{index}"


async def _measure(targets: dict[str, list[Target]], params: Parameters) -> dict[str, list[Sample]]:
    """Per mode, one pooled sample a round over all of that mode's processes."""
    request = EchoRequest(payload="x" * params.payload_bytes)
    # Process-major order: a round visits every kind once before any kind again, so
    # each kind's windows are spread over the round and meet the same swings.
    by_key = {
        _process_key(mode, index): targets[mode][index]
        for index in range(params.processes)
        for mode in MODES
    }
    channels = {key: grpc.aio.insecure_channel(t.address) for key, t in by_key.items()}
    calls = {
        key: functools.partial(
            DiagnosticsStub(channel).Echo, request, timeout=params.timeout_seconds
        )
        for key, channel in channels.items()
    }
    try:
        for channel in channels.values():
            await asyncio.wait_for(channel.channel_ready(), params.timeout_seconds)
        per_process = await interleaved_rounds(
            "server",
            calls,
            params,
            server_pids={key: target.pid for key, target in by_key.items()},
        )
    finally:
        await asyncio.gather(*(channel.close(grace=None) for channel in channels.values()))
    return {
        mode: [
            Sample.pooled([per_process[_process_key(mode, i)][r] for i in range(params.processes)])
            for r in range(params.rounds)
        ]
        for mode in MODES
    }


def _figures(rounds: list[Sample], bare: list[Sample]) -> dict[str, float | int]:
    paired = list(zip(rounds, bare, strict=True))
    return {
        "calls": sum(s.calls for s in rounds),
        "errors": sum(s.errors for s in rounds),
        "throughput_per_second": round(statistics.median(s.throughput for s in rounds), 1),
        "p50_ms": round(statistics.median(s.latency_ms(50) for s in rounds), 3),
        "p99_ms": round(statistics.median(s.latency_ms(99) for s in rounds), 3),
        "server_cpu_us_per_call": round(
            statistics.median(s.server_cpu_us_per_call for s in rounds), 1
        ),
        "ratio_to_bare": round(
            statistics.median(s.throughput / b.throughput for s, b in paired), 3
        ),
        "cpu_ratio_to_bare": round(
            statistics.median(
                s.server_cpu_us_per_call / b.server_cpu_us_per_call for s, b in paired
            ),
            3,
        ),
    }


def _report(samples: dict[str, list[Sample]], params: Parameters) -> None:
    figures = {mode: _figures(rounds, samples[BARE]) for mode, rounds in samples.items()}
    rows = [
        [
            mode,
            f"{f['calls']:,}",
            f"{f['throughput_per_second']:,.0f}",
            f"{f['p50_ms']:.2f}",
            f"{f['p99_ms']:.2f}",
            f"{f['server_cpu_us_per_call']:.0f}",
            f"{f['ratio_to_bare']:.2f}",
            f"{f['cpu_ratio_to_bare']:.2f}",
            str(f["errors"]),
        ]
        for mode, f in figures.items()
    ]
    ratio = figures[ON]["ratio_to_bare"]
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    print_table(
        f"Server cost per call: Echo {params.payload_bytes} B from a raw grpc.aio client,"
        f" concurrency {params.concurrency}, {params.rounds} round(s) x"
        f" {params.duration_seconds:g} s per process, {params.processes} process(es) per server",
        ["server", "calls", "calls/s", "p50 ms", "p99 ms", "srv CPU us/call", "vs bare",
         "CPU vs bare", "errors"],
        rows,
        [
            "calls: total over rounds and processes; the rest: median over rounds of each",
            "  round's figure over the server's processes; ratios taken within a round.",
            "srv CPU us/call: the server process's CPU time (all threads) per call.",
            f"blueprint serve (metrics + unsampled spans) / bare grpc.aio throughput: {ratio:.2f}"
            f" (goal >= {GOAL_RATIO}: {verdict})",
        ],
    )  # fmt: skip
    path = write_result(
        NAME,
        asdict(params),
        {
            "modes": figures,
            "rounds": {mode: [s.summary() for s in rounds] for mode, rounds in samples.items()},
            "telemetry_on_to_bare_ratio": ratio,
            "goal_ratio": GOAL_RATIO,
        },
    )
    progress(f"server: wrote {path}")


def run(quick: bool) -> None:
    params = QUICK if quick else FULL
    progress(
        f"server: starting {len(SERVERS)} kinds of server x {params.processes} process(es)"
        " (bare grpc.aio, blueprint serve x3)"
    )
    envs = {
        f"{instance}-{index}": env
        for instance, env, _ in SERVERS.values()
        for index in range(params.processes)
    }
    commands = {
        f"{instance}-{index}": cmd
        for instance, _, cmd in SERVERS.values()
        if cmd is not None
        for index in range(params.processes)
    }
    with diag_servers(envs, commands) as servers:
        processes = iter(servers)
        targets = {
            mode: [
                Target(server.address, server.process.pid)
                for server in itertools.islice(processes, params.processes)
            ]
            for mode in SERVERS
        }
        samples = asyncio.run(_measure(targets, params))
    _report(samples, params)
