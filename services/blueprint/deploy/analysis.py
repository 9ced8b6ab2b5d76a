"""The post-promotion analysis: judging the new live colour by its pods' own metrics.

Argo Rollouts' postPromotionAnalysis, without a Prometheus to ask: the rollout
scrapes every pod's `/metrics` as the window opens and as it closes, and judges the
increase of `rpc_server_call_duration_seconds` per service: the share of calls that
failed through the server's fault, and the 99th percentile of their duration.
Health checks and reflection are left out: the kubelet's probes would dilute both.
Pure arithmetic; the runner does the scraping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DURATION = "rpc_server_call_duration_seconds"
# The codes that spend the availability budget: the same allow-list as the SLO
# rules (observability/generate/slo.py), so the rollout and the alerts agree.
SERVER_ERROR_CODES = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
NOT_JUDGED_PREFIXES = ("grpc.health.v1.", "grpc.reflection.")


@dataclass(frozen=True)
class Policy:
    """`rollout.analysis` in the chart's values; each default is explained there."""

    enabled: bool = True
    window_seconds: float = 120.0
    max_error_ratio: float = 0.02
    max_p99_seconds: float = 1.0
    min_calls: int = 50

    def __post_init__(self) -> None:
        if self.window_seconds < 0 or self.min_calls < 0:
            raise ValueError("windowSeconds and minCalls must not be negative")
        if not 0 <= self.max_error_ratio <= 1 or self.max_p99_seconds <= 0:
            raise ValueError("maxErrorRatio must be within 0..1 and maxP99Seconds above 0")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Policy:
        defaults = cls()
        return cls(
            enabled=bool(values.get("enabled", defaults.enabled)),
            window_seconds=float(values.get("windowSeconds", defaults.window_seconds)),
            max_error_ratio=float(values.get("maxErrorRatio", defaults.max_error_ratio)),
            max_p99_seconds=float(values.get("maxP99Seconds", defaults.max_p99_seconds)),
            min_calls=int(values.get("minCalls", defaults.min_calls)),
        )


@dataclass(frozen=True)
class Calls:
    """Server calls counted by one pod (or added up): totals and the duration histogram."""

    total: float = 0.0
    errors: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)  # upper bound -> cumulative

    def __add__(self, other: Calls) -> Calls:
        bounds = set(self.buckets) | set(other.buckets)
        return Calls(
            self.total + other.total,
            self.errors + other.errors,
            {b: self.buckets.get(b, 0.0) + other.buckets.get(b, 0.0) for b in bounds},
        )

    @property
    def error_ratio(self) -> float:
        return self.errors / self.total if self.total else 0.0


def read_calls(text: str) -> Calls:
    """The server-call counters of one `/metrics` page, health and reflection left out."""
    total = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != DURATION:
            continue
        for sample in family.samples:
            if str(sample.labels.get("rpc_method", "")).startswith(NOT_JUDGED_PREFIXES):
                continue
            if sample.name == f"{DURATION}_count":
                total += sample.value
                if sample.labels.get("rpc_response_status_code") in SERVER_ERROR_CODES:
                    errors += sample.value
            elif sample.name == f"{DURATION}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Calls(total, errors, buckets)


def increase(before: Calls | None, after: Calls) -> Calls:
    """What one pod counted in the window; a counter that went down restarted from 0."""
    if before is None or after.total < before.total or after.errors < before.errors:
        return after
    return Calls(
        after.total - before.total,
        after.errors - before.errors,
        {b: max(v - before.buckets.get(b, 0.0), 0.0) for b, v in after.buckets.items()},
    )


def quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class ServiceVerdict:
    service: str
    calls: Calls
    problems: tuple[str, ...] = ()
    judged: bool = True  # False: too few calls to judge

    def describe(self) -> str:
        c = self.calls
        line = f"{self.service}: {c.total:.0f} calls, error ratio {c.error_ratio:.3f}"
        p99 = quantile(0.99, c.buckets)
        if not math.isnan(p99):
            line += f", p99 {p99:.3f}s"
        if not self.judged:
            line += " (too few calls to judge)"
        return line


def judge(
    service: str, calls: Calls, policy: Policy, problems: Iterable[str] = ()
) -> ServiceVerdict:
    """`problems` found while watching (a pod restarted, a scrape failed) fail it too."""
    found = list(problems)
    if calls.total < policy.min_calls:
        return ServiceVerdict(service, calls, tuple(found), judged=False)
    if calls.error_ratio > policy.max_error_ratio:
        found.append(
            f"error ratio {calls.error_ratio:.3f} over {calls.total:.0f} calls"
            f" > {policy.max_error_ratio:g}"
        )
    p99 = quantile(0.99, calls.buckets)
    if not math.isnan(p99) and p99 > policy.max_p99_seconds:
        found.append(f"p99 {p99:.3f}s > {policy.max_p99_seconds:g}s")
    return ServiceVerdict(service, calls, tuple(found))


@dataclass(frozen=True)
class Analysis:
    color: str
    window_seconds: float
    verdicts: tuple[ServiceVerdict, ...]
    problems: tuple[str, ...] = ()  # the colour as a whole: its Deployments

    @property
    def passed(self) -> bool:
        return not self.problems and not any(v.problems for v in self.verdicts)

    def failures(self) -> list[str]:
        return [*self.problems, *(f"{v.service}: {p}" for v in self.verdicts for p in v.problems)]
