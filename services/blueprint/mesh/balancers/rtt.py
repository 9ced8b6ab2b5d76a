"""What the latency-aware balancers share: the parameters of their RTT estimate."""

from __future__ import annotations

import random

from blueprint.mesh.balancers.base import SortedEndpointsBalancer
from blueprint.mesh.balancers.load import Clock, positive_seconds


class RttBalancer(SortedEndpointsBalancer):
    """Holds the decay, the initial RTT and the clock every endpoint's estimate is built with."""

    def __init__(
        self,
        decay_seconds: float,
        initial_rtt_seconds: float,
        rng: random.Random,
        clock: Clock,
    ) -> None:
        super().__init__(rng)
        # Checked here, not at the first `new_load`, so bad settings fail at start.
        self._decay = positive_seconds("decay_seconds", decay_seconds)
        self._initial_rtt = positive_seconds("initial_rtt_seconds", initial_rtt_seconds)
        self._clock = clock
