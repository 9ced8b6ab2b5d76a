"""Consistent hashing on a ring of virtual nodes: a key sticks to one endpoint.

Each endpoint owns `virtual_nodes x weight` points on a 64-bit ring; a key
belongs to the first point at or after its own hash, wrapping round. When an
endpoint joins it takes only the keys that now land on its points; when one
leaves only its keys move, to the next point along. Positions come from
blake2b, not `hash()`, which is salted per process: every client and every
restart must agree on the ring.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence, Set
from operator import attrgetter, itemgetter
from typing import ClassVar

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.balancers.load import PendingRequests
from blueprint.mesh.balancers.random_choice import choose_eligible
from blueprint.mesh.endpoint import Endpoint, Load


def ring_position(data: bytes) -> int:
    """A stable 64-bit position on the ring for `data`."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _points(instance_id: str, start: int, stop: int) -> list[int]:
    return [ring_position(f"{instance_id}#{i}".encode()) for i in range(start, stop)]


class ConsistentHash(Balancer):
    """Same key, same endpoint, while the set allows; keyless calls go anywhere."""

    name: ClassVar[str] = "consistent_hash"

    def __init__(self, virtual_nodes: int, rng: random.Random) -> None:
        if isinstance(virtual_nodes, bool) or not isinstance(virtual_nodes, int):
            raise ValueError(f"virtual_nodes must be an integer, got {virtual_nodes!r}")
        if virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be >= 1, got {virtual_nodes}")
        self._virtual_nodes = virtual_nodes
        self._rng = rng
        self._endpoints: tuple[Endpoint, ...] = ()
        self._points_of: dict[str, list[int]] = {}  # instance id -> its ring positions
        self._positions: list[int] = []  # sorted
        self._owners: list[Endpoint] = []  # _owners[i] owns _positions[i]

    def new_load(self) -> Load:
        # Not read when choosing; the client still counts calls per endpoint.
        return PendingRequests()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        points_of: dict[str, list[int]] = {}
        ring: list[tuple[int, str, Endpoint]] = []
        for endpoint in endpoints:
            instance_id = endpoint.instance_id
            # A malformed weight below 1 still gets a share, as in the other balancers.
            count = self._virtual_nodes * max(1, endpoint.weight)
            # Hash only what changed: a survivor reuses its points, and a weight
            # change adds or drops points at the end, leaving the rest in place.
            points = self._points_of.get(instance_id, [])
            if len(points) > count:
                points = points[:count]
            elif len(points) < count:
                points = points + _points(instance_id, len(points), count)
            points_of[instance_id] = points
            ring.extend((position, instance_id, endpoint) for position in points)
        # Two endpoints on one 64-bit position is unlikely but possible; the id
        # settles it the same way in every client.
        ring.sort(key=itemgetter(0, 1))
        self._points_of = points_of
        self._positions = [position for position, _, _ in ring]
        self._owners = [endpoint for _, _, endpoint in ring]
        # Sorted so a seeded rng gives the same keyless picks whatever the order.
        self._endpoints = tuple(sorted(endpoints, key=attrgetter("instance_id")))

    def pick(
        self, key: bytes | None = None, exclude: Set[str] = NOTHING_EXCLUDED
    ) -> Endpoint | None:
        if key is None:
            return choose_eligible(self._rng, self._endpoints, exclude)
        owners = self._owners
        size = len(owners)
        if size == 0:
            return None
        index = bisect.bisect_left(self._positions, ring_position(key))
        if not exclude:
            return owners[index % size]  # past the last point is the first
        if all(endpoint.instance_id in exclude for endpoint in self._endpoints):
            return None
        # Walk on to the next eligible owner, so a failed endpoint's keys go
        # where they would go if it left the ring, the same in every client.
        for offset in range(size):
            owner = owners[(index + offset) % size]
            if owner.instance_id not in exclude:
                return owner
        return None  # not reached: some endpoint is eligible
