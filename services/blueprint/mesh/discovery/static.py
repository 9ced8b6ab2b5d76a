"""Fixed endpoints from settings: for clients of a mesh they cannot see into."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

from blueprint.mesh.discovery.base import Instance, Registry

log = logging.getLogger(__name__)


class StaticRegistry(Registry):
    """`{"diag": ["10.0.0.1:50051", ...]}`; registering is a no-op, as nobody listens."""

    def __init__(self, endpoints: Mapping[str, Sequence[str]]) -> None:
        self._instances = {
            service: [Instance(service, address, address) for address in addresses]
            for service, addresses in endpoints.items()
        }

    async def register(self, instance: Instance) -> None:
        log.info("static discovery: %s is not announced anywhere", instance.instance_id)

    async def deregister(self, instance: Instance) -> None:
        return None

    async def instances(self, service: str) -> list[Instance]:
        return list(self._instances.get(service, []))

    async def services(self) -> list[str]:
        return sorted(self._instances)

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        yield await self.instances(service)
        await asyncio.Event().wait()  # the set never changes
