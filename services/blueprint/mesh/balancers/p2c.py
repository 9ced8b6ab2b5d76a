"""Power of two choices over peak-EWMA load (Finagle's `p2cPeakEwma`).

Comparing two random endpoints instead of scanning all is O(1) and, unlike
always taking the global minimum, does not stampede many clients onto the
one endpoint that looked best a moment ago; it still steers nearly as well.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED
from blueprint.mesh.balancers.load import PeakEwma
from blueprint.mesh.balancers.rtt import RttBalancer
from blueprint.mesh.endpoint import Endpoint, Load


class P2CPeakEwma(RttBalancer):
    """The cheaper of two distinct random eligible endpoints."""

    name: ClassVar[str] = "p2c_peak_ewma"

    def new_load(self) -> Load:
        return PeakEwma(self._decay, self._initial_rtt, self._clock)

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        candidates: Sequence[Endpoint] = self._endpoints
        if exclude:
            # Rare (a retry, a quarantine): filtering is simpler than Finagle's
            # bounded re-sampling and exact when most endpoints are excluded.
            candidates = [e for e in candidates if e.instance_id not in exclude]
        size = len(candidates)
        if size < 2:
            return candidates[0] if size else None
        first = self._rng.randrange(size)
        second = self._rng.randrange(size - 1)
        if second >= first:  # two distinct indices, uniformly, without retrying
            second += 1
        a, b = candidates[first], candidates[second]
        return b if b.load.cost() < a.load.cost() else a
