"""Balancing algorithms against one slow replica: who keeps the tail short.

Three diag replicas, one of them 10x slower; each algorithm drives the same
closed-loop `Work` load through a fresh mesh client, so no algorithm
inherits another's load estimates or connections.

Two load levels, because the answer depends on it. At light load (a few
calls in flight per fast replica) the load-aware algorithms starve the slow
replica and the tail shrinks. At heavy load the fast replicas carry many
calls each; `Work` sleeps, so their latency does not grow with that queue,
yet the cost model of least-response-time and P2C (latency x calls in flight)
assumes it does and sends the slow replica a share again. Both are shown.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import asdict, dataclass

from bench.common import Sample, closed_loop, diag_servers, print_table, progress, write_result
from blueprint.diag.v1.diag_pb2 import WORK_KIND_SLEEP, WorkRequest, WorkResponse
from blueprint.diag.v1.diag_pb2_grpc import DiagnosticsStub
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import StaticRegistry
from blueprint.mesh.settings import BalancerName, Settings

NAME = "balancers"
GOAL_RATIO = 0.5  # the project's goal: p99(p2c_peak_ewma) <= 0.5 x p99(round_robin)
ALGORITHMS: tuple[BalancerName, ...] = (
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_response_time",
    "p2c_peak_ewma",
    "consistent_hash",
    "random",
)
SLOW = "diag-slow"
FAST = ("diag-fast-1", "diag-fast-2")


@dataclass(frozen=True)
class Parameters:
    concurrency: int = 4
    work_ms: float = 2.0  # fast replicas ~2 ms, the slow one ~slowdown x that
    slowdown: float = 10.0
    warmup_seconds: float = 0.5
    duration_seconds: float = 6.0  # per algorithm
    timeout_seconds: float = 10.0


LIGHT = Parameters(concurrency=4, duration_seconds=4.0)
HEAVY = Parameters(concurrency=12, duration_seconds=4.0)
QUICK = Parameters(warmup_seconds=0.05, duration_seconds=0.2)


async def _measure_one(balancer: BalancerName, addresses: list[str], params: Parameters) -> Sample:
    endpoints = {"diag": addresses}
    settings = Settings(discovery="static", static_endpoints=endpoints, balancer=balancer)
    client = MeshClient(settings, StaticRegistry(endpoints))
    try:
        stub = client.stub("diag", DiagnosticsStub)
        request = WorkRequest(kind=WORK_KIND_SLEEP)
        request.duration.FromNanoseconds(round(params.work_ms * 1_000_000))
        await client.wait_for_endpoints("diag", params.timeout_seconds)
        return await closed_loop(
            functools.partial(stub.Work, request, timeout=params.timeout_seconds),
            concurrency=params.concurrency,
            warmup_seconds=params.warmup_seconds,
            duration_seconds=params.duration_seconds,
            served_by=_instance_id,
        )
    finally:
        await client.close()


def _instance_id(reply: WorkResponse) -> str:
    return reply.instance_id


async def _measure(addresses: list[str], params: Parameters) -> dict[BalancerName, Sample]:
    samples: dict[BalancerName, Sample] = {}
    for balancer in ALGORITHMS:
        progress(f"balancers: {balancer}, concurrency {params.concurrency}")
        samples[balancer] = await _measure_one(balancer, addresses, params)
    return samples


def _slow_share(sample: Sample) -> float:
    return sample.served_by[SLOW] / sample.calls if sample.calls else 0.0


def _report(samples: dict[BalancerName, Sample], params: Parameters) -> dict[str, object]:
    figures = {
        balancer: {
            **sample.summary(),
            "slow_share": round(_slow_share(sample), 4),
            "served_by": dict(sample.served_by),
        }
        for balancer, sample in samples.items()
    }
    rows = [
        [
            balancer,
            f"{sample.calls:,}",
            f"{sample.throughput:,.0f}",
            f"{sample.latency_ms(50):.2f}",
            f"{sample.latency_ms(99):.2f}",
            f"{sample.latency_ms(99.9):.2f}",
            f"{_slow_share(sample):.1%}",
            str(sample.errors),
        ]
        for balancer, sample in samples.items()
    ]
    ratio = samples["p2c_peak_ewma"].latency_ms(99) / samples["round_robin"].latency_ms(99)
    verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
    print_table(
        f"Balancers vs one {params.slowdown:g}x slow replica of 3:"
        f" Work SLEEP {params.work_ms:g} ms, concurrency {params.concurrency},"
        f" {params.duration_seconds:g} s each",
        ["algorithm", "calls", "calls/s", "p50 ms", "p99 ms", "p99.9 ms", "slow share", "errors"],
        rows,
        [
            "slow share: calls the slow replica served; an even spread gives 33.3 %.",
            "consistent_hash: a call without a hash key hashes the caller's address, so all of"
            " this one caller's",
            "  calls go to one replica: that is its promise (affinity), not a fault. Which replica"
            " depends",
            "  on the ports drawn for this run, so some runs land on the slow one.",
            "At heavy load each fast replica holds several calls; Work sleeps, so their latency"
            " does not",
            "  grow with that queue, but latency x in-flight (least_response_time, p2c) assumes it"
            " does",
            "  and sends the slow replica a share again.",
            f"p99(p2c_peak_ewma) / p99(round_robin): {ratio:.2f} (goal <= {GOAL_RATIO}: {verdict})",
        ],
    )
    return {
        "parameters": asdict(params),
        "algorithms": figures,
        "p2c_to_round_robin_p99_ratio": round(ratio, 3),
    }


def run(quick: bool) -> None:
    levels = [QUICK] if quick else [LIGHT, HEAVY]
    progress("balancers: starting 3 diag servers, one slow")
    slow_env = {"BLUEPRINT_DIAG_SLOWDOWN": f"{levels[0].slowdown:g}"}
    replicas: dict[str, dict[str, str]] = {**{name: {} for name in FAST}, SLOW: slow_env}
    with diag_servers(replicas) as servers:
        addresses = [server.address for server in servers]
        measured = [(params, asyncio.run(_measure(addresses, params))) for params in levels]
    results = {f"concurrency_{p.concurrency}": _report(samples, p) for p, samples in measured}
    path = write_result(
        NAME, {"algorithms": list(ALGORITHMS), "slow_replica": SLOW}, {"load_levels": results}
    )
    progress(f"balancers: wrote {path}")
