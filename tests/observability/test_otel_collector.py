"""The OpenTelemetry Collector config: OTLP in, traces out over OTLP, metrics to Prometheus.

No collector binary comes from the registries this project uses, so this checks
the wiring the collector itself would refuse to start without.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "observability" / "otel-collector" / "config.yaml"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def test_receives_otlp_over_grpc_and_http(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_pipelines_send_traces_to_otlp_and_metrics_to_prometheus(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp/traces"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert config["exporters"]["otlp/traces"]["endpoint"].startswith("${env:")


def test_memory_limiter_first_and_batch_last(config: dict[str, Any]) -> None:
    for pipeline in config["service"]["pipelines"].values():
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"


def test_every_component_used_is_defined(config: dict[str, Any]) -> None:
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    assert "health_check" in service["extensions"]
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(config[kind]), (kind, pipeline[kind])
