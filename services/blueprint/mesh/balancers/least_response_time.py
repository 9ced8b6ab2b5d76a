"""Least response time: fastest average answer and fewest calls in flight."""

from __future__ import annotations

import random
from collections.abc import Sequence, Set
from operator import attrgetter
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.balancers.least_connections import least_loaded
from blueprint.mesh.balancers.load import Clock, Ewma, positive_seconds
from blueprint.mesh.endpoint import Endpoint, Load


class LeastResponseTime(Balancer):
    """Lowest `Ewma` cost (average rtt x (outstanding + 1)) wins; ties at random."""

    name: ClassVar[str] = "least_response_time"

    def __init__(
        self,
        decay_seconds: float,
        initial_rtt_seconds: float,
        rng: random.Random,
        clock: Clock,
    ) -> None:
        # Checked here, not at the first `new_load`, so bad settings fail at start.
        self._decay = positive_seconds("decay_seconds", decay_seconds)
        self._initial_rtt = positive_seconds("initial_rtt_seconds", initial_rtt_seconds)
        self._rng = rng
        self._clock = clock
        self._endpoints: tuple[Endpoint, ...] = ()

    def new_load(self) -> Load:
        return Ewma(self._decay, self._initial_rtt, self._clock)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        # Sorted so a seeded rng gives the same picks whatever the registry order.
        self._endpoints = tuple(sorted(endpoints, key=attrgetter("instance_id")))

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        return least_loaded(self._endpoints, exclude, self._rng)
