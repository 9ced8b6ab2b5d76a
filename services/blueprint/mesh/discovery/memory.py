"""In-process registry: for tests and single-process embedding."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from blueprint.mesh.discovery.base import Instance, Registry


class MemoryRegistry(Registry):
    """Instances held in a dict; watchers are woken directly on every change."""

    def __init__(self) -> None:
        self._instances: dict[str, dict[str, Instance]] = defaultdict(dict)
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)

    async def register(self, instance: Instance) -> None:
        self._instances[instance.service][instance.instance_id] = instance
        self._notify(instance.service)

    async def deregister(self, instance: Instance) -> None:
        if self._instances[instance.service].pop(instance.instance_id, None) is not None:
            self._notify(instance.service)

    async def instances(self, service: str) -> list[Instance]:
        return sorted(self._instances[service].values(), key=lambda i: i.instance_id)

    async def services(self) -> list[str]:
        return sorted(name for name, found in self._instances.items() if found)

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        changed = asyncio.Event()
        self._watchers[service].add(changed)
        try:
            while True:
                changed.clear()
                yield await self.instances(service)
                await changed.wait()
        finally:
            self._watchers[service].discard(changed)

    def _notify(self, service: str) -> None:
        for changed in self._watchers[service]:
            changed.set()
