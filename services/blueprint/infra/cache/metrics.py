"""Prometheus counters for caches: where reads were answered, and why loads ran.

Create one `CacheMetrics` per process and hand it to every `Cache`; each cache labels
its samples with its own name.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

Lookup = Literal["near", "hit", "stale", "negative", "miss"]
LoadReason = Literal["miss", "early", "stale"]


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._lookups = Counter(
            "blueprint_cache_lookups",
            "Cache reads by where they were answered (near, hit, stale, negative) or miss",
            ["cache", "result"],
            registry=registry,
        )
        self._loads = Counter(
            "blueprint_cache_loads",
            "Loader runs by reason: miss, early (XFetch) or stale (stale-while-revalidate)",
            ["cache", "reason"],
            registry=registry,
        )
        self._load_seconds = Histogram(
            "blueprint_cache_load_duration_seconds",
            "Time the loader took (the δ XFetch uses)",
            ["cache"],
            registry=registry,
        )

    def lookup(self, cache: str, result: Lookup) -> None:
        self._lookups.labels(cache, result).inc()

    def load(self, cache: str, reason: LoadReason, seconds: float) -> None:
        self._loads.labels(cache, reason).inc()
        self._load_seconds.labels(cache).observe(seconds)
