"""Least response time: fastest average answer and fewest calls in flight."""

from __future__ import annotations

from collections.abc import Set
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED
from blueprint.mesh.balancers.least_connections import least_loaded
from blueprint.mesh.balancers.load import Ewma
from blueprint.mesh.balancers.rtt import RttBalancer
from blueprint.mesh.endpoint import Endpoint, Load


class LeastResponseTime(RttBalancer):
    """Lowest `Ewma` cost (average rtt x (outstanding + 1)) wins; ties at random."""

    name: ClassVar[str] = "least_response_time"

    def new_load(self) -> Load:
        return Ewma(self._decay, self._initial_rtt, self._clock)

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        return least_loaded(self._endpoints, exclude, self._rng)
