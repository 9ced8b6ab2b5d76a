"""Service discovery: one `Registry` interface, several backends."""

from __future__ import annotations

from blueprint.mesh.discovery.base import Instance, Registry
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

# Where a client looks when neither BLUEPRINT_REDIS_URL nor `blueprint up` says.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def open_registry(settings: Settings, *, redis_url: str | None = None) -> Registry:
    """The registry `settings.discovery` names; `redis_url` overrides the setting."""
    if settings.discovery == "memory":
        return MemoryRegistry()
    if settings.discovery == "static":
        return StaticRegistry(settings.static_endpoints)
    if settings.discovery == "kubernetes":
        return KubernetesRegistry.from_settings(settings)
    return RedisRegistry.from_url(
        redis_url or settings.redis_url or DEFAULT_REDIS_URL,
        prefix=settings.redis_prefix,
        lease_ttl_seconds=settings.lease_ttl_seconds,
        resync_seconds=settings.resync_seconds,
    )
