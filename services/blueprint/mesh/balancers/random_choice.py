"""Uniform random choice among the eligible endpoints."""

from __future__ import annotations

import random
from collections.abc import Sequence, Set
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, SortedEndpointsBalancer
from blueprint.mesh.balancers.load import PendingRequests
from blueprint.mesh.endpoint import Endpoint, Load


def choose_eligible(
    rng: random.Random, endpoints: Sequence[Endpoint], exclude: Set[str]
) -> Endpoint | None:
    """A uniformly random endpoint not in `exclude`, or None if there is none."""
    if not exclude:
        return rng.choice(endpoints) if endpoints else None
    eligible = [endpoint for endpoint in endpoints if endpoint.instance_id not in exclude]
    return rng.choice(eligible) if eligible else None


class RandomChoice(SortedEndpointsBalancer):
    """Uniform random: no state to keep, no coordination between clients."""

    name: ClassVar[str] = "random"

    def new_load(self) -> Load:
        # Not read when choosing; the client still counts calls per endpoint.
        return PendingRequests()

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        return choose_eligible(self._rng, self._endpoints, exclude)
