"""Mesh client overhead: one Echo load through a raw channel and through the mesh client,
and what telemetry (RPC metrics, spans) adds on both sides.

Same concurrency, same process; the raw and plain mesh modes share one server
with telemetry off, and each telemetry mode has a server configured like its
client (metrics and unsampled spans; metrics and every call traced — spans
are created and ended, with no exporter, so the figure is the instrumentation's
own cost, not a collector's). The modes take turns in
rounds whose order rotates, and each figure is the median over rounds, so
neither machine drift nor going first favours one side. The ratio to raw
is taken within each round before the median: modes measured seconds apart
share the machine's mood of the moment, which on a small VM swings more
than the difference being measured.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import grpc.aio
from prometheus_client import CollectorRegistry

from bench.common import (
    Sample,
    diag_servers,
    interleaved_rounds,
    print_table,
    progress,
    write_result,
)
from blueprint.diag.v1.diag_pb2 import EchoRequest, EchoResponse
from blueprint.diag.v1.diag_pb2_grpc import DiagnosticsStub
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import StaticRegistry
from blueprint.mesh.settings import BalancerName, Settings
from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.metrics import Metrics

NAME = "mesh_overhead"
GOAL_RATIO = 0.75  # the project's stated goal: mesh throughput >= 0.75 x raw
# Issue 8: the mesh client with its telemetry on (metrics + unsampled spans) >= 0.95 x raw.
CLIENT_TELEMETRY_GOAL_RATIO = 0.95
RAW = "raw channel"
MESH_BALANCERS: tuple[BalancerName, ...] = ("round_robin", "p2c_peak_ewma")
# Client telemetry alone: the same plain server as the raw channel.
CLIENT_TELEMETRY = "mesh, round_robin, client metrics + spans unsampled"
SAMPLING_OFF = "mesh, round_robin, metrics + spans unsampled"
SAMPLING_ON = "mesh, round_robin, metrics + every call traced"
MODES = (
    RAW,
    *(f"mesh, {balancer}" for balancer in MESH_BALANCERS),
    CLIENT_TELEMETRY,
    SAMPLING_OFF,
    SAMPLING_ON,
)
# Server per telemetry level: (instance id, environment).
SERVERS = {
    "off": ("diag-plain", {"BLUEPRINT_TELEMETRY_ENABLED": "false"}),
    "unsampled": ("diag-unsampled", {"BLUEPRINT_TRACE_SAMPLING_RATIO": "0"}),
    "sampled": ("diag-sampled", {"BLUEPRINT_TRACE_SAMPLING_RATIO": "1"}),
}


@dataclass(frozen=True)
class Parameters:
    concurrency: int = 32
    payload_bytes: int = 64
    warmup_seconds: float = 1.0  # per mode, once, before the rounds
    # Many short rounds: each ratio pairs windows a second apart (bench.server_cost).
    rounds: int = 12
    settle_seconds: float = 0.15  # per mode per round: the loop refills after a switch
    duration_seconds: float = 0.6  # per mode per round: 7.2 s measured per mode
    # Both modes set one, as a real caller would: the mesh always sends a deadline.
    timeout_seconds: float = 10.0


FULL = Parameters()
QUICK = Parameters(warmup_seconds=0.1, rounds=1, settle_seconds=0.05, duration_seconds=0.2)

EchoCall = Callable[[], Awaitable[EchoResponse]]


def _mesh_client(balancer: BalancerName, address: str, sampling: float | None = None) -> MeshClient:
    """A mesh client; with `sampling` it records metrics and spans at that ratio."""
    endpoints = {"diag": [address]}
    settings = Settings(discovery="static", static_endpoints=endpoints, balancer=balancer)
    if sampling is None:
        return MeshClient(settings, StaticRegistry(endpoints))
    traced = settings.model_copy(update={"trace_sampling_ratio": sampling})
    provider = tracing.tracer_provider(traced, "bench", "bench-client")
    return MeshClient(
        traced,
        StaticRegistry(endpoints),
        tracer=tracing.tracer(provider),
        metrics=Metrics(CollectorRegistry()),
    )


async def _measure(addresses: dict[str, str], params: Parameters) -> dict[str, list[Sample]]:
    request = EchoRequest(payload="x" * params.payload_bytes)
    raw_channel = grpc.aio.insecure_channel(addresses["off"])
    clients = {
        f"mesh, {balancer}": _mesh_client(balancer, addresses["off"]) for balancer in MESH_BALANCERS
    }
    clients[CLIENT_TELEMETRY] = _mesh_client("round_robin", addresses["off"], sampling=0.0)
    clients[SAMPLING_OFF] = _mesh_client("round_robin", addresses["unsampled"], sampling=0.0)
    clients[SAMPLING_ON] = _mesh_client("round_robin", addresses["sampled"], sampling=1.0)
    stubs = {
        RAW: DiagnosticsStub(raw_channel),
        **{mode: client.stub("diag", DiagnosticsStub) for mode, client in clients.items()},
    }
    calls: dict[str, EchoCall] = {
        mode: functools.partial(stub.Echo, request, timeout=params.timeout_seconds)
        for mode, stub in stubs.items()
    }
    try:
        await asyncio.wait_for(raw_channel.channel_ready(), params.timeout_seconds)
        for client in clients.values():
            await client.wait_for_endpoints("diag", params.timeout_seconds)
        return await interleaved_rounds("overhead", {mode: calls[mode] for mode in MODES}, params)
    finally:
        await raw_channel.close(grace=None)
        await asyncio.gather(*(client.close() for client in clients.values()))


def _median_figures(rounds: list[Sample], raw: list[Sample]) -> dict[str, float | int]:
    paired = zip(rounds, raw, strict=True)
    ratios = [sample.throughput / baseline.throughput for sample, baseline in paired]
    return {
        "calls": sum(sample.calls for sample in rounds),
        "errors": sum(sample.errors for sample in rounds),
        "throughput_per_second": round(statistics.median(s.throughput for s in rounds), 1),
        "p50_ms": round(statistics.median(s.latency_ms(50) for s in rounds), 3),
        "p99_ms": round(statistics.median(s.latency_ms(99) for s in rounds), 3),
        "client_cpu_us_per_call": round(
            statistics.median(s.client_cpu_us_per_call for s in rounds), 1
        ),
        "ratio_to_raw": round(statistics.median(ratios), 3),
    }


def _report(samples: dict[str, list[Sample]], params: Parameters) -> None:
    figures = {mode: _median_figures(rounds, samples[RAW]) for mode, rounds in samples.items()}
    rows = [
        [
            mode,
            f"{f['calls']:,}",
            f"{f['throughput_per_second']:,.0f}",
            f"{f['p50_ms']:.2f}",
            f"{f['p99_ms']:.2f}",
            f"{f['client_cpu_us_per_call']:.0f}",
            f"{f['ratio_to_raw']:.2f}",
            str(f["errors"]),
        ]
        for mode, f in figures.items()
    ]
    ratio = figures[f"mesh, {MESH_BALANCERS[0]}"]["ratio_to_raw"]
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    client_ratio = figures[CLIENT_TELEMETRY]["ratio_to_raw"]
    client_verdict = "met" if client_ratio >= CLIENT_TELEMETRY_GOAL_RATIO else "NOT met"
    print_table(
        f"Mesh client overhead: Echo {params.payload_bytes} B, concurrency {params.concurrency},"
        f" {params.rounds} round(s) x {params.duration_seconds:g} s per mode",
        ["mode", "calls", "calls/s", "p50 ms", "p99 ms", "CPU us/call", "vs raw", "errors"],
        rows,
        [
            "calls: total over rounds. calls/s, latencies and vs raw (throughput ratio within",
            "  a round): median over rounds. CPU us/call: this client process's CPU time (all",
            "  threads) per call; it shows the mesh's cost even when the server is the limit.",
            "Client telemetry row: the client records RPC metrics and unsampled spans; its",
            "  server is the raw channel's (telemetry off), so the row is the client's cost.",
            "Telemetry rows: client and server both record RPC metrics and create spans",
            "  (unsampled: none kept; traced: every call kept, no exporter attached).",
            f"mesh ({MESH_BALANCERS[0]}) / raw throughput: {ratio:.2f}"
            f" (goal >= {GOAL_RATIO}: {verdict})",
            f"mesh with client telemetry / raw throughput: {client_ratio:.2f}"
            f" (goal >= {CLIENT_TELEMETRY_GOAL_RATIO}: {client_verdict})",
        ],
    )
    path = write_result(
        NAME,
        asdict(params),
        {
            "modes": figures,
            "rounds": {mode: [s.summary() for s in rounds] for mode, rounds in samples.items()},
            "mesh_to_raw_ratio": ratio,
            "goal_ratio": GOAL_RATIO,
            "client_telemetry_to_raw_ratio": client_ratio,
            "client_telemetry_goal_ratio": CLIENT_TELEMETRY_GOAL_RATIO,
        },
    )
    progress(f"overhead: wrote {path}")


def run(quick: bool) -> None:
    params = QUICK if quick else FULL
    progress(f"overhead: starting {len(SERVERS)} diag servers (telemetry off/unsampled/sampled)")
    with diag_servers(dict(SERVERS.values())) as servers:
        addresses = {level: server.address for level, server in zip(SERVERS, servers, strict=True)}
        samples = asyncio.run(_measure(addresses, params))
    _report(samples, params)
