"""Endpoints and a settable clock for the balancer tests."""

from __future__ import annotations

from collections.abc import Iterable

from blueprint.mesh.balancers.base import Balancer
from blueprint.mesh.discovery.base import Instance
from blueprint.mesh.endpoint import Endpoint


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def endpoint(balancer: Balancer, n: int, weight: int = 1) -> Endpoint:
    instance = Instance("svc", f"i{n}", f"10.0.0.{n}:50051", weight=weight)
    return Endpoint(instance, load=balancer.new_load())


def endpoints(balancer: Balancer, weights: Iterable[int]) -> list[Endpoint]:
    return [endpoint(balancer, n, weight) for n, weight in enumerate(weights)]


def ids(chosen: Iterable[Endpoint | None]) -> list[str | None]:
    return [None if e is None else e.instance_id for e in chosen]
