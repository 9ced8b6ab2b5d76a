"""Round robin: every eligible endpoint in turn, blind to load and weight."""

from __future__ import annotations

import random
from collections.abc import Sequence, Set
from operator import attrgetter
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.balancers.load import PendingRequests
from blueprint.mesh.endpoint import Endpoint, Load


class RoundRobin(Balancer):
    """Strict rotation over the endpoints, skipping excluded ones."""

    name: ClassVar[str] = "round_robin"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._endpoints: tuple[Endpoint, ...] = ()
        self._next = 0
        # gRPC's habit: start the rotation at a random endpoint, so many
        # short-lived clients (a CLI, a fresh pod) do not all hit the first one.
        self._rng = rng

    def new_load(self) -> Load:
        # Not read when choosing; the client still counts calls per endpoint.
        return PendingRequests()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        # Sorted, so a resync listing the same set in another order leaves the
        # rotation where it was.
        first = not self._endpoints
        self._endpoints = tuple(sorted(endpoints, key=attrgetter("instance_id")))
        if not self._endpoints:
            self._next = 0
        elif first and self._rng is not None:
            self._next = self._rng.randrange(len(self._endpoints))
        else:
            self._next %= len(self._endpoints)

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        endpoints = self._endpoints
        size = len(endpoints)
        start = self._next
        # With nothing excluded the first step returns: O(1).
        for offset in range(size):
            index = (start + offset) % size
            endpoint = endpoints[index]
            if endpoint.instance_id not in exclude:
                self._next = (index + 1) % size
                return endpoint
        return None
