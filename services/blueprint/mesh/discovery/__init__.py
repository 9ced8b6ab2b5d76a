"""Service discovery: one `Registry` interface, several backends.

Backends are imported when first named (PEP 562 `__getattr__`): a command that reads
Redis discovery does not pay for the Kubernetes client's import, nor the reverse.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from blueprint.mesh.discovery.base import Instance, Registry

if TYPE_CHECKING:
    from blueprint.mesh.discovery.kubernetes import KubernetesRegistry
    from blueprint.mesh.discovery.memory import MemoryRegistry
    from blueprint.mesh.discovery.redis import RedisRegistry
    from blueprint.mesh.discovery.static import StaticRegistry
    from blueprint.mesh.settings import Settings

__all__ = [
    "Instance",
    "KubernetesRegistry",
    "MemoryRegistry",
    "RedisRegistry",
    "Registry",
    "StaticRegistry",
    "open_registry",
]

_BACKENDS = {
    "KubernetesRegistry": "blueprint.mesh.discovery.kubernetes",
    "MemoryRegistry": "blueprint.mesh.discovery.memory",
    "RedisRegistry": "blueprint.mesh.discovery.redis",
    "StaticRegistry": "blueprint.mesh.discovery.static",
}

# Where a client looks when neither BLUEPRINT_REDIS_URL nor `blueprint up` says.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def __getattr__(name: str) -> Any:
    module = _BACKENDS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def open_registry(settings: Settings, *, redis_url: str | None = None) -> Registry:
    """The registry `settings.discovery` names; `redis_url` overrides the setting."""
    if settings.discovery == "memory":
        from blueprint.mesh.discovery.memory import MemoryRegistry

        return MemoryRegistry()
    if settings.discovery == "static":
        from blueprint.mesh.discovery.static import StaticRegistry

        return StaticRegistry(settings.static_endpoints)
    if settings.discovery == "kubernetes":
        from blueprint.mesh.discovery.kubernetes import KubernetesRegistry

        return KubernetesRegistry.from_settings(settings)
    from blueprint.mesh.discovery.redis import RedisRegistry

    return RedisRegistry.from_url(
        redis_url or settings.redis_url or DEFAULT_REDIS_URL,
        prefix=settings.redis_prefix,
        lease_ttl_seconds=settings.lease_ttl_seconds,
        resync_seconds=settings.resync_seconds,
    )
