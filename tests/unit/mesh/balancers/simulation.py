"""A closed-loop load on fake replicas and a fake clock: what a balancer does with them.

Deterministic (seeded), and in simulated time, so selection logic is tested
without timing anything real.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field

import grpc
from balancer_helpers import FakeClock

from blueprint.mesh.balancers.base import Balancer
from blueprint.mesh.discovery.base import Instance
from blueprint.mesh.endpoint import Endpoint


@dataclass
class Replica:
    """How one fake replica answers.

    serial: calls are served one at a time (a CPU-bound handler); otherwise
        side by side (a handler that sleeps or waits on I/O).
    failure_rate: the share of calls answered `failure_code` after `fail_seconds`.
    hiccups: the share of calls that take `hiccup_factor` x as long (scheduling noise).
    """

    seconds: float
    serial: bool = False
    failure_rate: float = 0.0
    failure_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    fail_seconds: float = 0.0005
    hiccups: float = 0.0
    hiccup_factor: float = 10.0
    busy_until: float = 0.0


@dataclass
class Outcome:
    picks: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def calls(self) -> int:
        return sum(self.picks.values())

    def share(self, instance_id: str) -> float:
        return self.picks[instance_id] / self.calls

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[math.ceil(0.99 * len(ordered)) - 1]


def members(balancer: Balancer, replicas: dict[str, Replica]) -> list[Endpoint]:
    return [
        Endpoint(Instance("svc", name, f"10.0.0.{n}:1"), load=balancer.new_load())
        for n, name in enumerate(replicas)
    ]


def run(
    balancer: Balancer,
    clock: FakeClock,
    replicas: dict[str, Replica],
    *,
    concurrency: int,
    calls: int,
    seed: int = 0,
    endpoints: list[Endpoint] | None = None,
) -> Outcome:
    """`concurrency` callers, each sending its next call as soon as the last ends."""
    rng = random.Random(seed)
    if endpoints is None:
        endpoints = members(balancer, replicas)
        balancer.update(endpoints)
    outcome = Outcome()
    due: list[tuple[float, int, Endpoint, float, grpc.StatusCode]] = []
    sequence = 0

    def send() -> None:
        nonlocal sequence
        chosen = balancer.pick()
        assert chosen is not None
        replica = replicas[chosen.instance_id]
        chosen.load.start()
        outcome.picks[chosen.instance_id] += 1
        if rng.random() < replica.failure_rate:
            seconds, code = replica.fail_seconds, replica.failure_code
        else:
            seconds, code = replica.seconds, grpc.StatusCode.OK
            if rng.random() < replica.hiccups:
                seconds *= replica.hiccup_factor
        if replica.serial:
            replica.busy_until = max(replica.busy_until, clock.now) + seconds
            ends = replica.busy_until
        else:
            ends = clock.now + seconds
        sequence += 1
        heapq.heappush(due, (ends, sequence, chosen, clock.now, code))

    for _ in range(concurrency):
        send()
    while outcome.calls < calls or due:
        ends, _, done, started, code = heapq.heappop(due)
        clock.now = max(clock.now, ends)
        done.load.finish(ends - started, code)
        if code is grpc.StatusCode.OK:
            outcome.latencies.append(ends - started)
        else:
            outcome.failures += 1
        if outcome.calls < calls:
            send()
    return outcome
