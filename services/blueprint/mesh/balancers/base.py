"""The balancer contract: pick one endpoint per call."""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence, Set
from operator import attrgetter
from typing import ClassVar

from blueprint.mesh.endpoint import Endpoint, Load

NOTHING_EXCLUDED: frozenset[str] = frozenset()


class Balancer(abc.ABC):
    """Chooses an endpoint for each call among the current set.

    The client calls `update` whenever discovery changes the set, `new_load`
    once per new endpoint (so the balancer decides what "load" means), and
    `pick` per call. `exclude` holds instance ids to avoid (an endpoint that
    just failed this call, or one in quarantine); `key` is the affinity key for
    hash-based balancers and ignored by the others.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def new_load(self) -> Load:
        """A fresh load tracker for a newly discovered endpoint."""

    @abc.abstractmethod
    def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace the endpoint set (order is the registry's, not meaningful)."""

    @abc.abstractmethod
    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        """The endpoint for this call, or None when no endpoint is eligible."""


class SortedEndpointsBalancer(Balancer):
    """A balancer that keeps the set sorted by instance id and chooses with an rng.

    Sorted so a seeded rng gives the same picks whatever the registry's order.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._endpoints: tuple[Endpoint, ...] = ()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = tuple(sorted(endpoints, key=attrgetter("instance_id")))
