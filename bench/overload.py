"""Overload: 2 diag replicas whose Work holds the CPU 50 ms, driven 10x past capacity.

Capacity and the unloaded tail are measured first, in the same run, on the
same servers: one caller per replica is as many calls as a replica can serve
(a CPU-bound handler on one event loop serves one at a time) without any
queueing, so its throughput is the capacity and its p99 the unloaded p99.
Then 300 callers, each call with a 1 s deadline, for a few seconds.

Goodput is what counts: calls answered OK within their deadline, per second.
Without shedding, every replica takes every call, each call gets 1/150th of a
CPU and runs far past its deadline: the servers stay busy on answers nobody
waits for. With the admission gate the replicas run about one call at a time
and answer the rest RESOURCE_EXHAUSTED + RetryInfo at once; callers come back
when told (a caller whose call was shed waits the time RetryInfo names before its
next call, as a well-behaved client does; after any other failure it calls again
at once).

Three server configurations, each on its own pair of replicas: shedding with
the floor lowered to 1 (the setting for handlers that hold the CPU, the goal
row), shedding with the default floor, and shedding off (what a plain server
does). The callers are a plain round-robin client over the two addresses, so
the figures are the servers' own (the mesh client's breakers and ejection
react to overload too, which is another subject); it runs on the same machine,
so on a small one it takes some of the CPU the servers are measured on.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import grpc.aio

from bench.common import diag_servers, percentile, print_table, progress, write_result
from blueprint.diag.v1.diag_pb2 import WORK_KIND_CPU, WorkRequest
from blueprint.diag.v1.diag_pb2_grpc import DiagnosticsStub
from blueprint.mesh.resilience.retry import retry_info_delay

NAME = "overload"
GOODPUT_GOAL = 0.8  # goodput >= 80 % of measured capacity
P99_GOAL = 2.0  # p99 of successful calls <= 2x the unloaded p99
REPLICAS = 2
# Configuration name -> server environment; each gets its own replicas.
CONFIGS: dict[str, dict[str, str]] = {
    "shedding, min limit 1": {"BLUEPRINT_ADMISSION_MIN_LIMIT": "1"},
    "shedding, default floor": {},
    "no shedding": {"BLUEPRINT_ADMISSION_ENABLED": "false"},
}
GOAL_CONFIG = "shedding, min limit 1"


@dataclass(frozen=True)
class Parameters:
    work_ms: float = 50.0
    callers: int = 300
    deadline_seconds: float = 1.0
    unloaded_seconds: float = 4.0
    capacity_seconds: float = 4.0
    warmup_seconds: float = 4.0  # of the overload: the limit and the RetryInfo delay settle
    overload_seconds: float = 6.0
    configs: tuple[str, ...] = tuple(CONFIGS)


FULL = Parameters()
QUICK = Parameters(
    work_ms=5.0, callers=30, unloaded_seconds=0.3, capacity_seconds=0.3,
    warmup_seconds=0.2, overload_seconds=0.5, configs=(GOAL_CONFIG,),
)  # fmt: skip


@dataclass
class Outcome:
    window_seconds: float
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)

    @property
    def goodput(self) -> float:
        return len(self.latencies) / self.window_seconds

    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000 if self.latencies else math.nan

    def summary(self) -> dict[str, object]:
        return {
            "ok": len(self.latencies),
            "goodput_per_second": round(self.goodput, 1),
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 1) if self.latencies else None,
            "p99_ms": round(self.p99_ms(), 1) if self.latencies else None,
            "errors_by_code": dict(self.codes),
        }


async def _drive(
    stub: Any, request: WorkRequest, callers: int, warmup: float, window: float,
    deadline: float, rng: random.Random,
) -> Outcome:  # fmt: skip
    """`callers` closed-loop callers; calls started inside the window are recorded."""
    outcome = Outcome(window)
    measure_from = time.perf_counter() + warmup
    measure_until = measure_from + window

    async def caller() -> None:
        await asyncio.sleep(rng.uniform(0, 0.2))  # callers do not all arrive in one tick
        while (started := time.perf_counter()) < measure_until:
            pause = 0.0
            try:
                await stub.Work(request, timeout=deadline)
            except grpc.aio.AioRpcError as error:
                if started >= measure_from:
                    outcome.codes[error.code().name] += 1
                told = retry_info_delay(error.trailing_metadata())  # type: ignore[arg-type]
                pause = told if told is not None else 0.0
            else:
                if started >= measure_from:
                    outcome.latencies.append(time.perf_counter() - started)
            if pause:
                await asyncio.sleep(pause)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return outcome


async def _measure(addresses: list[str], params: Parameters, phases: list[str]) -> Outcome:
    # The caller's own retries are the mesh's (budgeted, RetryInfo honoured); the balancer
    # is the default a user gets.
    channels = [grpc.aio.insecure_channel(address) for address in addresses]
    request = WorkRequest(kind=WORK_KIND_CPU)
    request.duration.FromNanoseconds(round(params.work_ms * 1_000_000))
    rng = random.Random(8)
    try:
        stub = _RoundRobin([DiagnosticsStub(channel) for channel in channels])
        outcome = Outcome(0)
        for phase in phases:
            if phase == "unloaded":
                outcome = await _drive(
                    stub, request, REPLICAS, 0.5, params.unloaded_seconds, 10.0, rng
                )
            elif phase == "capacity":
                outcome = await _drive(
                    stub, request, 4 * REPLICAS, 0.5, params.capacity_seconds, 10.0, rng
                )
            else:
                outcome = await _drive(
                    stub, request, params.callers, params.warmup_seconds,
                    params.overload_seconds, params.deadline_seconds, rng,
                )  # fmt: skip
        return outcome
    finally:
        for channel in channels:
            await channel.close()


class _RoundRobin:
    def __init__(self, stubs: list[DiagnosticsStub]) -> None:
        self._stubs = stubs
        self._next = 0

    def Work(self, request: WorkRequest, timeout: float) -> Any:
        self._next = (self._next + 1) % len(self._stubs)
        return self._stubs[self._next].Work(request, timeout=timeout)


def _servers_env(params: Parameters) -> dict[str, Mapping[str, str]]:
    return {
        f"diag-{index}-{config.split(',')[0].replace(' ', '')}-{replica}": CONFIGS[config]
        for index, config in enumerate(params.configs)
        for replica in range(REPLICAS)
    }


def run(quick: bool) -> None:
    params = QUICK if quick else FULL
    progress(f"overload: starting {REPLICAS * len(params.configs)} diag servers")
    env = _servers_env(params)
    # Six processes importing at once on a small machine: generous start-up time.
    with diag_servers(env, start_timeout=120) as servers:
        by_config = {
            config: [s.address for s in servers[REPLICAS * i : REPLICAS * (i + 1)]]
            for i, config in enumerate(params.configs)
        }
        progress("overload: unloaded and capacity (one and four callers per replica)")
        unloaded = asyncio.run(_measure(by_config[GOAL_CONFIG], params, ["unloaded"]))
        capacity = asyncio.run(_measure(by_config[GOAL_CONFIG], params, ["capacity"]))
        overloaded: dict[str, Outcome] = {}
        for config, addresses in by_config.items():
            progress(f"overload: {params.callers} callers, {config}")
            # A short unloaded spell first, so each pair has seen its no-load latency.
            phases = ["overload"] if config == GOAL_CONFIG else ["unloaded", "overload"]
            overloaded[config] = asyncio.run(
                _measure(addresses, params if config == GOAL_CONFIG else _brief(params), phases)
            )
    _report(params, unloaded, capacity, overloaded)


def _brief(params: Parameters) -> Parameters:
    return Parameters(**{**asdict(params), "unloaded_seconds": 1.0})  # type: ignore[arg-type]


def _report(
    params: Parameters, unloaded: Outcome, capacity: Outcome, overloaded: dict[str, Outcome]
) -> None:
    capacity_rate = max(capacity.goodput, unloaded.goodput)
    base_p99 = unloaded.p99_ms()

    def row(name: str, outcome: Outcome, callers: int) -> list[str]:
        errors = ", ".join(f"{code} {count}" for code, count in outcome.codes.most_common())
        return [
            name, str(callers), f"{outcome.goodput:.1f}", f"{outcome.goodput / capacity_rate:.2f}",
            f"{outcome.p99_ms():.0f}", f"{outcome.p99_ms() / base_p99:.2f}", errors or "-",
        ]  # fmt: skip

    rows = [
        row("unloaded", unloaded, REPLICAS),
        row("capacity", capacity, 4 * REPLICAS),
        *(row(f"10x: {name}", outcome, params.callers) for name, outcome in overloaded.items()),
    ]
    goal = overloaded[GOAL_CONFIG]
    goodput_ratio = goal.goodput / capacity_rate
    p99_ratio = goal.p99_ms() / base_p99
    met = goodput_ratio >= GOODPUT_GOAL and p99_ratio <= P99_GOAL
    print_table(
        f"Overload: {REPLICAS} diag replicas, Work CPU {params.work_ms:g} ms,"
        f" {params.deadline_seconds:g} s deadlines under overload",
        ["load", "callers", "ok/s", "x capacity", "p99 ms", "x unloaded p99", "errors"],
        rows,
        [
            "capacity: the larger of the unloaded and capacity rows' ok/s.",
            f"goodput / capacity: {goodput_ratio:.2f} (goal >= {GOODPUT_GOAL});"
            f" p99 / unloaded p99: {p99_ratio:.2f} (goal <= {P99_GOAL}):"
            f" {'met' if met else 'NOT met'} ({GOAL_CONFIG})",
        ],
    )
    path = write_result(
        NAME,
        asdict(params),
        {
            "capacity_per_second": round(capacity_rate, 1),
            "unloaded": unloaded.summary(),
            "capacity": capacity.summary(),
            "overload": {name: outcome.summary() for name, outcome in overloaded.items()},
            "goal_config": GOAL_CONFIG,
            "goodput_to_capacity": round(goodput_ratio, 3),
            "p99_to_unloaded_p99": round(p99_ratio, 3),
            "goal_met": met,
        },
    )
    progress(f"overload: wrote {path}")
