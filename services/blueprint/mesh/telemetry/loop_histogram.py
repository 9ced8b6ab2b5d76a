"""A Prometheus histogram for the call path: counted in plain numbers, read when scraped.

prometheus_client's Histogram takes two locks and walks its buckets in Python on every
observation (8,500 instructions a call here, the largest single part of a server's
telemetry); calls are observed on their event loop's thread, where no lock is needed.
This keeps per label set a list of counts found by `bisect`, the sum and the last
exemplar per bucket, and turns them into the same `_bucket`/`_count`/`_sum`/`_created`
series, exemplars included, when the registry collects.

One thread observes each histogram (its event loop's): `+=` on a list item is not
atomic across threads. A scrape that lands between an observation's count and its sum
sees it counted and not yet summed; the next scrape agrees again.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString


class LoopHistogramChild:
    """One label set's counts; `observe` as prometheus_client's Histogram child."""

    __slots__ = ("_bounds", "counts", "created", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.exemplars: list[Exemplar | None] = [None] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        # The first bound at or above the amount: Prometheus buckets are `le`.
        index = bisect_left(self._bounds, amount)
        self.counts[index] += 1
        self.sum += amount
        if exemplar:
            self.exemplars[index] = Exemplar(exemplar, amount, time.time())


class LoopHistogram(Collector):
    """Labelled histogram children (`labels(...)`) exported as one histogram family."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        # The `le` labels as prometheus_client writes them (Go's float format).
        self._le = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], LoopHistogramChild] = {}
        # Children are made rarely (a new method or status); the registry lists them
        # from its own thread.
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> LoopHistogramChild:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, LoopHistogramChild(self._bounds))
        return child

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            counts, exemplars, total = list(child.counts), list(child.exemplars), child.sum
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            running = 0
            for le, count, exemplar in zip(self._le, counts, exemplars, strict=True):
                running += count
                buckets.append((le, running, exemplar) if exemplar else (le, running))
            family.add_metric(list(values), buckets, total)
            labels = dict(zip(self._labelnames, values, strict=True))
            family.add_sample(f"{self._name}_created", labels, child.created)
        return [family]

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
