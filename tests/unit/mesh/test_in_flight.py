"""In-flight gauges counted in plain ints: the scrape reads the sum of everyone counting."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from blueprint.mesh.telemetry.metrics import RpcMetrics, in_flight


def test_counters_of_one_gauge_child_are_one_value_at_scrape() -> None:
    registry = CollectorRegistry()
    metrics = RpcMetrics(registry)
    first = in_flight(metrics.server_in_flight.labels("pkg.S/M"))
    second = in_flight(metrics.server_in_flight.labels("pkg.S/M"))
    other = in_flight(metrics.server_in_flight.labels("pkg.S/Other"))
    first.value += 2
    second.value += 1
    other.value += 1
    first.value -= 1

    def scraped(method: str) -> float | None:
        return registry.get_sample_value("rpc_server_calls_in_flight", {"rpc_method": method})

    assert first is second
    assert scraped("pkg.S/M") == 2
    assert scraped("pkg.S/Other") == 1
