"""The discovery contract every backend fulfils."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Instance:
    """One serving process of a service, as discovery knows it."""

    service: str
    instance_id: str
    address: str  # host:port that clients dial
    weight: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)
    # False: alive but not taking calls (a hard dependency is down, or not ready yet).
    # Clients route around it while any serving instance is left.
    serving: bool = True


class Registry(abc.ABC):
    """Where instances announce themselves and clients find them.

    `watch` yields a full snapshot whenever the set changes (and once at the
    start), so a consumer never has to apply deltas in order.
    """

    @abc.abstractmethod
    async def register(self, instance: Instance) -> None:
        """Announce `instance`; backends with leases keep it alive until deregistered."""

    @abc.abstractmethod
    async def deregister(self, instance: Instance) -> None:
        """Withdraw `instance` at once (graceful stop)."""

    @abc.abstractmethod
    async def instances(self, service: str) -> list[Instance]:
        """The live instances of `service` right now."""

    @abc.abstractmethod
    async def services(self) -> list[str]:
        """Names of services with at least one live instance."""

    @abc.abstractmethod
    def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Snapshots of `service`'s instances, one per change."""

    async def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Release connections and stop heartbeats."""
