"""Prometheus metrics of queue consumers: outcomes per message, handler time, batches,
how long messages waited, and how deep the queue is (sampled, see `depth.py`)."""

from __future__ import annotations

from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

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
            "Time handler runs took (one message or one batch), whatever their outcome",
            ["stream", "group"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self._batch = Histogram(
            "blueprint_queue_batch_messages",
            "Messages per handler run: 1 for a plain handler, up to the batch size otherwise",
            ["stream", "group"],
            registry=registry,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        )
        self._splits = Counter(
            "blueprint_queue_batch_splits",
            "Batches whose handler failed, split in two to isolate the failing messages",
            ["stream", "group"],
            registry=registry,
        )

        self._lag = Histogram(
            "blueprint_queue_lag_seconds",
            "From a message's first publish to its commit: how far behind the consumers run",
            ["stream", "group"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
        )
        # Sampled from Redis by every worker of the queue: read them with max, not sum.
        self.backlog = Gauge(
            "blueprint_queue_backlog",
            "Messages in a ready stream (delivered but unacknowledged ones included)",
            ["stream", "priority"],
            registry=registry,
        )
        self.pending = Gauge(
            "blueprint_queue_pending",
            "Messages delivered to the group and not yet acknowledged",
            ["stream", "group"],
            registry=registry,
        )
        self.delayed = Gauge(
            "blueprint_queue_delayed",
            "Failed messages waiting for their retry",
            ["stream"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "blueprint_queue_dead_letters",
            "Messages in the dead-letter stream, waiting for a human",
            ["stream"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            "blueprint_queue_oldest_message_age_seconds",
            "Age (since first publish) of the oldest ready message; 0 when none waits",
            ["stream"],
            registry=registry,
        )

    def count(self, outcome: Outcome, stream: str, group: str, messages: int = 1) -> None:
        self._counters[outcome].labels(stream, group).inc(messages)

    def observe(self, seconds: float, messages: int, stream: str, group: str) -> None:
        """One handler run of `messages` messages that took `seconds`."""
        self._duration.labels(stream, group).observe(seconds)
        self._batch.labels(stream, group).observe(messages)

    def split(self, stream: str, group: str) -> None:
        self._splits.labels(stream, group).inc()

    def lag(self, seconds: float, stream: str, group: str) -> None:
        self._lag.labels(stream, group).observe(max(0.0, seconds))
