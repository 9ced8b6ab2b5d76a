"""The call path's lock-free histogram exports what prometheus_client's Histogram would,
in both exposition formats, exemplars included."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from blueprint.mesh.telemetry.loop_histogram import LoopHistogram
from blueprint.mesh.telemetry.metrics import RPC_DURATION_BUCKETS

OBSERVATIONS = [
    ("Echo", "OK", 0.0, None),
    ("Echo", "OK", 0.001, None),
    ("Echo", "OK", 0.005, None),  # on a bound: `le` takes it
    ("Echo", "OK", 0.0051, {"trace_id": "0af7651916cd43dd8448eb211c80319c"}),
    ("Echo", "OK", 3.0, None),
    ("Echo", "OK", 100.0, None),  # past the last bound: +Inf only
    ("Echo", "INTERNAL", 0.2, {"trace_id": "b7ad6b7169203331b7ad6b7169203331"}),
    ("Work", "OK", 0.05, None),
]
# What may differ: when each series and exemplar was made.
_TIMES = re.compile(r"(_created(\{[^}]*\})?) [0-9.e+]+|(\} [0-9.e+-]+) [0-9.]+$", re.MULTILINE)


def _exported(histogram_type: type, generate: object) -> str:
    registry = CollectorRegistry()
    labelnames = ["rpc_method", "rpc_response_status_code"]
    if histogram_type is Histogram:
        histogram = Histogram(
            "rpc_x_seconds", "doc", labelnames, buckets=RPC_DURATION_BUCKETS, registry=registry
        )
    else:
        histogram = LoopHistogram(
            "rpc_x_seconds", "doc", labelnames, RPC_DURATION_BUCKETS, registry
        )
    for method, code, seconds, exemplar in OBSERVATIONS:
        histogram.labels(method, code).observe(seconds, exemplar)
    text = generate(registry).decode()  # type: ignore[operator]
    return _TIMES.sub(lambda m: m.group(1) or m.group(3), text)


@pytest.mark.parametrize(
    "generate", [generate_latest, generate_openmetrics], ids=["text", "openmetrics"]
)
def test_exports_what_prometheus_clients_histogram_exports(generate: object) -> None:
    expected = _exported(Histogram, generate)
    assert "trace_id" in expected or generate is generate_latest
    assert _exported(LoopHistogram, generate) == expected


def test_counts_sum_and_buckets_read_back_through_the_registry() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("rpc_y_seconds", "doc", ["m"], (0.1, 1.0), registry)
    for seconds in (0.05, 0.1, 0.5, 7.0):
        histogram.labels("a").observe(seconds)

    def sample(suffix: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"rpc_y_seconds{suffix}", {"m": "a", **labels})

    assert sample("_count") == 4
    assert sample("_sum") == pytest.approx(7.65)
    assert [sample("_bucket", le=le) for le in ("0.1", "1.0", "+Inf")] == [2, 3, 4]


def test_wrong_label_count_is_refused() -> None:
    histogram = LoopHistogram("rpc_z_seconds", "doc", ["a", "b"], (1.0,), CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("only-one")
