"""The RPC and mesh metrics every process exports on its /metrics port.

Names and labels follow OpenTelemetry's RPC semantic conventions (v1.40,
`rpc.server.call.duration` and friends) translated to Prometheus: attribute
`rpc.method` becomes label `rpc_method`, durations are seconds. Histograms
carry trace-id exemplars (served when Prometheus asks for OpenMetrics).
"""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from blueprint.mesh.telemetry.loop_histogram import LoopHistogram

# OpenTelemetry's recommended boundaries for RPC durations, in seconds.
RPC_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

if TYPE_CHECKING:
    from blueprint.mesh.admission.gate import AdmissionGate
    from blueprint.mesh.admission.loop_lag import LoopLag


class RpcMetrics:
    """Server- and client-side call metrics; one instance per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Observed on every call: counted without locks (loop_histogram).
        self.server_duration = LoopHistogram(
            "rpc_server_call_duration_seconds",
            "Duration of incoming RPCs (OpenTelemetry rpc.server.call.duration).",
            ["rpc_system_name", "rpc_method", "rpc_response_status_code"],
            RPC_DURATION_BUCKETS,
            registry,
        )
        self.server_in_flight = Gauge(
            "rpc_server_calls_in_flight",
            "Incoming RPCs being handled now.",
            ["rpc_method"],
            registry=registry,
        )
        self.client_duration = LoopHistogram(
            "rpc_client_call_duration_seconds",
            "Duration of outgoing RPCs, retries included (OpenTelemetry rpc.client.call.duration).",
            ["rpc_system_name", "rpc_method", "rpc_response_status_code", "server_address"],
            RPC_DURATION_BUCKETS,
            registry,
        )
        self.client_in_flight = Gauge(
            "rpc_client_calls_in_flight",
            "Outgoing RPCs awaiting an answer now.",
            ["server_address"],
            registry=registry,
        )


class MeshMetrics:
    """What the client-side mesh decides: picks, retries, breakers, ejections."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.picks = Counter(
            "blueprint_mesh_picks",
            "Calls sent to each endpoint, by the balancer that chose it.",
            ["target", "endpoint", "balancer"],
            registry=registry,
        )
        self.retries = Counter(
            "blueprint_mesh_retries",
            "Attempts after the first, by what caused them.",
            ["target", "reason"],
            registry=registry,
        )
        self.budget_exhausted = Counter(
            "blueprint_mesh_retry_budget_exhausted",
            "Retries not made because the retry budget was spent.",
            ["target"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "blueprint_mesh_breaker_state",
            "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
            ["target", "endpoint"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "blueprint_mesh_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["target", "endpoint", "state"],
            registry=registry,
        )
        self.ejections = Counter(
            "blueprint_mesh_ejections",
            "Endpoints ejected as outliers (consecutive failures).",
            ["target", "endpoint"],
            registry=registry,
        )
        self.endpoints = Gauge(
            "blueprint_mesh_endpoints",
            "Endpoints discovery currently lists for a target.",
            ["target"],
            registry=registry,
        )
        self.discovery_changes = Counter(
            "blueprint_mesh_discovery_changes",
            "Endpoint-set changes received from discovery.",
            ["target"],
            registry=registry,
        )
        self.discovery_held = Counter(
            "blueprint_mesh_discovery_reads_held",
            "Discovery reads that lost most endpoints at once, distrusted for a while.",
            ["target"],
            registry=registry,
        )
        self.bulkhead_rejections = Counter(
            "blueprint_mesh_bulkhead_rejections",
            "Calls refused at once because the target's in-flight limit was reached.",
            ["target"],
            registry=registry,
        )
        self.hedges = Counter(
            "blueprint_mesh_hedges",
            "Hedged (second) attempts sent for slow idempotent calls.",
            ["target"],
            registry=registry,
        )
        self.throttled = Counter(
            "blueprint_mesh_throttled",
            "Calls refused by the client itself (adaptive throttling) while the target"
            " refused or timed out many of the calls it was sent.",
            ["target"],
            registry=registry,
        )


class AdmissionMetrics:
    """Server-side load shedding (blueprint.mesh.admission)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.limit = Gauge(
            "blueprint_admission_limit",
            "Unary calls this server runs at once before others wait (the adaptive limit).",
            registry=registry,
        )
        self.waiting = Gauge(
            "blueprint_admission_waiting",
            "Calls waiting for a slot under the limit now.",
            registry=registry,
        )
        self.loop_lag = Gauge(
            "blueprint_admission_loop_lag_seconds",
            "How late the event loop runs what is due (smoothed); high: no spare time.",
            registry=registry,
        )
        self.loop_demand = Gauge(
            "blueprint_admission_loop_demand_ratio",
            "Share of time the event loop's thread wanted the CPU, running or waiting for"
            " a core (smoothed); near 1: no spare time.",
            registry=registry,
        )
        self.shed = Counter(
            "blueprint_admission_shed",
            "Calls refused unstarted with RESOURCE_EXHAUSTED + RetryInfo (overload).",
            ["rpc_method"],
            registry=registry,
        )
        self.expired = Counter(
            "blueprint_admission_expired",
            "Calls answered DEADLINE_EXCEEDED unstarted: their deadline passed first.",
            ["rpc_method"],
            registry=registry,
        )

    def watch(self, gate: AdmissionGate, loop_lag: LoopLag) -> None:
        """Read the gauges from the gate at scrape time (nothing to do per call)."""
        self.limit.set_function(lambda: gate.limit.limit)
        self.waiting.set_function(lambda: gate.waiting)
        self.loop_lag.set_function(lambda: loop_lag.lag)
        self.loop_demand.set_function(lambda: loop_lag.demand)


class Metrics:
    """Everything one process exports, built against one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rpc = RpcMetrics(registry)
        self.mesh = MeshMetrics(registry)
        self.admission = AdmissionMetrics(registry)
        self.build_info = Gauge(
            "blueprint_build_info",
            "Always 1; labels say which Blueprint service and instance this process is.",
            # Not `service`/`instance`: Prometheus' own target labels would shadow them.
            ["blueprint_service", "instance_id", "version"],
            registry=registry,
        )


@functools.cache
def default_metrics() -> Metrics:
    """Metrics on prometheus-client's default registry, for clients outside a server runtime
    (the CLI, benchmarks, tests); created on first use, once per process."""
    return Metrics(REGISTRY)


class InFlight:
    """An in-flight gauge counted in a plain int and read when scraped.

    The hot path adds and subtracts one per call; a gauge's inc()/dec() would take its
    lock and check its mode each time. Everyone counting into one gauge child shares
    one counter (`in_flight`), so the exported value is the same sum as before.
    """

    __slots__ = ("__weakref__", "value")

    def __init__(self) -> None:
        self.value = 0


_COUNTERS: weakref.WeakKeyDictionary[Any, InFlight] = weakref.WeakKeyDictionary()


def in_flight(child: Any) -> InFlight:
    """The counter behind `child` (a Gauge's labels(...)), made its value on first use."""
    counter = _COUNTERS.get(child)
    if counter is None:
        counter = _COUNTERS[child] = InFlight()
        child.set_function(lambda: counter.value)
    return counter
