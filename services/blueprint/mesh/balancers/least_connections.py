"""Least connections: the endpoint with the fewest calls in flight."""

from __future__ import annotations

import random
from collections.abc import Sequence, Set
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, SortedEndpointsBalancer
from blueprint.mesh.balancers.load import PendingRequests
from blueprint.mesh.endpoint import Endpoint, Load


def least_loaded(
    endpoints: Sequence[Endpoint], exclude: Set[str], rng: random.Random
) -> Endpoint | None:
    """The eligible endpoint of lowest `load.cost()`, ties broken at random."""
    best: Endpoint | None = None
    best_cost = 0.0
    ties = 0
    for endpoint in endpoints:
        if exclude and endpoint.instance_id in exclude:
            continue
        cost = endpoint.load.cost()
        if best is None or cost < best_cost:
            best, best_cost, ties = endpoint, cost, 1
        elif cost == best_cost:
            # Reservoir sampling of one: each of k tied endpoints is kept with
            # probability 1/k, so equally idle endpoints share the calls
            # instead of the first one in the list taking them all.
            ties += 1
            if rng.randrange(ties) == 0:
                best = endpoint
    return best


class LeastConnections(SortedEndpointsBalancer):
    """Fewest outstanding calls wins; an O(n) scan, as n is small."""

    name: ClassVar[str] = "least_connections"

    def new_load(self) -> Load:
        return PendingRequests()

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        return least_loaded(self._endpoints, exclude, self._rng)
