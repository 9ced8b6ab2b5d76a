"""Power of two choices over expected latency, with probes: the default balancer.

Two random endpoints are compared and the cheaper one by `ExpectedLatency`
gets the call (Linkerd's and Finagle's P2C: O(1), and many clients do not
all stampede onto the one endpoint that looked best a moment ago). Equal
costs go to the first of the two drawn, itself drawn at random: a fresh
client spreads its first calls.

A shunned endpoint's estimate never decays on its own (Finagle's decays
toward zero while idle, which is its way of probing, and which handed a slow
replica a share that grew with the idle time). Instead, when the loser of a
comparison has no call in flight, no answer for `probe_seconds` and no call
for `probe_every` picks, it gets this one call: one probe at a time, at most
one in `probe_every` calls and one per `probe_seconds`, so a replica that
recovers is re-learnt within a few probes and a slow one costs the tail
almost nothing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence, Set
from typing import ClassVar, cast

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, SortedEndpointsBalancer
from blueprint.mesh.balancers.load import Clock, ExpectedLatency, positive_seconds
from blueprint.mesh.endpoint import Endpoint, Load


class P2CExpectedLatency(SortedEndpointsBalancer):
    """The cheaper of two distinct random eligible endpoints, or a due probe."""

    name: ClassVar[str] = "p2c_expected_latency"

    def __init__(
        self,
        decay_seconds: float,
        initial_seconds: float,
        failure_penalty_seconds: float,
        probe_seconds: float,
        probe_every: int,
        rng: random.Random,
        clock: Clock,
    ) -> None:
        super().__init__(rng)
        # Checked here, not at the first `new_load`, so bad settings fail at start.
        self._decay = positive_seconds("decay_seconds", decay_seconds)
        self._initial = positive_seconds("initial_seconds", initial_seconds)
        self._penalty = positive_seconds("failure_penalty_seconds", failure_penalty_seconds)
        self._probe_seconds = positive_seconds("probe_seconds", probe_seconds)
        if probe_every < 1:
            raise ValueError(f"probe_every must be >= 1, got {probe_every!r}")
        self._probe_every = probe_every
        self._clock = clock
        self._picks = 0

    def new_load(self) -> Load:
        return ExpectedLatency(self._decay, self._initial, self._penalty, self._clock)

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        candidates: Sequence[Endpoint] = self._endpoints
        if exclude:
            candidates = [e for e in candidates if e.instance_id not in exclude]
        size = len(candidates)
        self._picks += 1
        if size < 2:
            if not size:
                return None
            chosen = candidates[0]
        else:
            first = self._rng.randrange(size)
            second = self._rng.randrange(size - 1)
            if second >= first:  # two distinct indices, uniformly, without retrying
                second += 1
            chosen, other = candidates[first], candidates[second]
            if other.load.cost() < chosen.load.cost():
                chosen, other = other, chosen
            if self._probe_due(cast(ExpectedLatency, other.load)):
                chosen = other
        cast(ExpectedLatency, chosen.load).picked_at = self._picks
        return chosen

    def _probe_due(self, load: ExpectedLatency) -> bool:
        # Cheapest tests first: the clock is read only for a long-unpicked endpoint.
        return (
            load.outstanding == 0
            and self._picks - load.picked_at >= self._probe_every
            and self._clock() - load.answered_at >= self._probe_seconds
        )
