"""Prometheus counters for caches: where reads were answered, why loads ran, and how
the stampede lock was met.

Create one `CacheMetrics` per process and hand it to every `Cache`; each cache labels
its samples with its own name.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

Lookup = Literal["near", "hit", "stale", "negative", "miss"]
LoadReason = Literal["miss", "early", "stale"]
# acquired: this caller took the lock and loads; waited: another caller loaded, and its
# result was used; timed_out: the holder took longer than the wait; busy: a background
# refresh found another already refreshing.
LockOutcome = Literal["acquired", "waited", "timed_out", "busy"]


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
        self._locks = Counter(
            "blueprint_cache_stampede_locks",
            "Meetings with the cross-process load lock: acquired (this caller loads), waited "
            "(another's result used), timed_out, or busy (a refresh already running)",
            ["cache", "outcome"],
            registry=registry,
        )

    def lookup(self, cache: str, result: Lookup) -> None:
        self._lookups.labels(cache, result).inc()

    def load(self, cache: str, reason: LoadReason, seconds: float) -> None:
        self._loads.labels(cache, reason).inc()
        self._load_seconds.labels(cache).observe(seconds)

    def lock(self, cache: str, outcome: LockOutcome) -> None:
        self._locks.labels(cache, outcome).inc()
