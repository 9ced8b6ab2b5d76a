"""Prometheus metrics of queue consumers: outcomes per message and handler time."""

from __future__ import annotations

from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

Outcome = Literal["processed", "failed", "retried", "dead_lettered", "duplicate", "claimed"]

_HELP: dict[Outcome, str] = {
    "processed": "Messages whose handler returned; acknowledged",
    "failed": "Handler runs that raised or timed out",
    "retried": "Failed messages scheduled for a delayed retry",
    "dead_lettered": "Messages moved to the dead-letter stream",
    "duplicate": "Redeliveries of already processed messages, acknowledged unrun",
    "claimed": "Messages taken over from a consumer idle past the visibility timeout",
}


class QueueMetrics:
    """One per process; every consumer labels samples with its stream and group."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._counters = {
            outcome: Counter(
                f"blueprint_queue_messages_{outcome}",
                text,
                ["stream", "group"],
                registry=registry,
            )
            for outcome, text in _HELP.items()
        }
        self._duration = Histogram(
            "blueprint_queue_handler_duration_seconds",
            "Time handlers took, whatever their outcome",
            ["stream", "group"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )

    def count(self, outcome: Outcome, stream: str, group: str) -> None:
        self._counters[outcome].labels(stream, group).inc()

    def observe(self, seconds: float, stream: str, group: str) -> None:
        self._duration.labels(stream, group).observe(seconds)
