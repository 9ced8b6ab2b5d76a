"""Redis cache-aside with stampede protection, negative caching, TTL jitter,
stale-while-revalidate and an in-process near cache. See `cache.py` for the layers.

    cache = Cache(redis, prefix="blueprint:cache:links", policy=CachePolicy(ttl_seconds=300))
    url = await cache.get_or_load(code, lambda: links.find_url(code))
"""

from blueprint.infra.cache.cache import Cache, CacheWaitTimeout, Loader
from blueprint.infra.cache.metrics import CacheMetrics
from blueprint.infra.cache.policy import CachePolicy, jittered_ttl, should_refresh_early
from blueprint.infra.cache.serializers import (
    BytesSerializer,
    JsonSerializer,
    SerializationError,
    Serializer,
    StrSerializer,
)

__all__ = [
    "BytesSerializer",
    "Cache",
    "CacheMetrics",
    "CachePolicy",
    "CacheWaitTimeout",
    "JsonSerializer",
    "Loader",
    "SerializationError",
    "Serializer",
    "StrSerializer",
    "jittered_ttl",
    "should_refresh_early",
]
