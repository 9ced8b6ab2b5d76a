"""Smooth weighted round robin, nginx's algorithm.

Each pick adds every eligible endpoint's weight to its running `current`,
takes the largest, and charges the winner the eligible total. Over `total`
picks each endpoint wins exactly `weight` times, and the wins are spread out:
weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from operator import attrgetter
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.balancers.load import PendingRequests
from blueprint.mesh.endpoint import Endpoint, Load


class WeightedRoundRobin(Balancer):
    """Rotation in proportion to `Endpoint.weight`, interleaved."""

    name: ClassVar[str] = "weighted_round_robin"

    def __init__(self) -> None:
        self._endpoints: list[Endpoint] = []
        self._weights: list[int] = []
        self._current: list[int] = []
        self._total = 0

    def new_load(self) -> Load:
        # Not read when choosing; the client still counts calls per endpoint.
        return PendingRequests()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        previous = {
            endpoint.instance_id: current
            for endpoint, current in zip(self._endpoints, self._current, strict=True)
        }
        # Sorted, so a resync listing the same set in another order changes nothing.
        ordered = sorted(endpoints, key=attrgetter("instance_id"))
        # Survivors keep their place in the rhythm (discovery resends unchanged
        # sets every resync; restarting would favour the heaviest each time).
        current = [previous.get(endpoint.instance_id, 0) for endpoint in ordered]
        # A leaver takes its `current` with it; spread the difference so the
        # sum is zero again. With a zero sum every `current` stays above
        # -total, i.e. no endpoint gets a whole pick ahead of its share.
        surplus = sum(current)
        if surplus:
            share, extra = divmod(surplus, len(current))
            current = [c - share - (1 if i < extra else 0) for i, c in enumerate(current)]
        self._endpoints = ordered
        # Weights come from settings (>= 1); a malformed one counts as 1 rather
        # than silently starving an endpoint that discovery says is serving.
        self._weights = [max(1, endpoint.weight) for endpoint in ordered]
        self._current = current
        self._total = sum(self._weights)

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        endpoints, weights, current = self._endpoints, self._weights, self._current
        best = -1
        total = self._total
        if exclude:
            total = 0
        for index, weight in enumerate(weights):
            # nginx skips excluded peers entirely (no credit, not in the
            # total), which keeps the sum of `current` unchanged.
            if exclude:
                if endpoints[index].instance_id in exclude:
                    continue
                total += weight
            current[index] += weight
            if best < 0 or current[index] > current[best]:
                best = index
        if best < 0:
            return None
        current[best] -= total
        return endpoints[best]
