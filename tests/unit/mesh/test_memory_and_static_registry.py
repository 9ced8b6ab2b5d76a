from __future__ import annotations

import asyncio

from blueprint.mesh.discovery import Instance, MemoryRegistry, StaticRegistry


async def test_memory_registry_watch_follows_changes() -> None:
    registry = MemoryRegistry()
    watch = registry.watch("diag")
    assert await anext(watch) == []
    one = Instance("diag", "a", "127.0.0.1:1")
    await registry.register(one)
    assert await asyncio.wait_for(anext(watch), 1) == [one]
    await registry.deregister(one)
    assert await asyncio.wait_for(anext(watch), 1) == []
    assert await registry.services() == []
    await watch.aclose()


async def test_static_registry_serves_the_configured_endpoints() -> None:
    registry = StaticRegistry({"diag": ["10.0.0.1:50051", "10.0.0.2:50051"]})
    found = await registry.instances("diag")
    assert [i.address for i in found] == ["10.0.0.1:50051", "10.0.0.2:50051"]
    assert await registry.instances("other") == []
    assert await anext(registry.watch("diag")) == found
