"""The post-promotion analysis' arithmetic, from /metrics pages a real registry writes."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from blueprint.deploy import analysis
from blueprint.deploy.analysis import Calls, Policy
from blueprint.mesh.telemetry.metrics import RpcMetrics
from observability.generate import slo

ECHO = "blueprint.diag.v1.Diagnostics/Echo"


def page(calls: list[tuple[str, str, float]]) -> str:
    """A pod's /metrics after `calls` (method, status code, seconds), as the mesh records them."""
    registry = CollectorRegistry()
    metrics = RpcMetrics(registry)
    for method, code, seconds in calls:
        metrics.server_duration.labels("grpc", method, code).observe(seconds)
    return generate_latest(registry).decode()


def test_the_server_error_codes_are_the_slos() -> None:
    assert set(slo.SERVER_ERROR_CODES) == analysis.SERVER_ERROR_CODES


def test_calls_count_errors_and_leave_health_and_reflection_out() -> None:
    calls = analysis.read_calls(
        page(
            [(ECHO, "OK", 0.01)] * 6
            + [(ECHO, "UNAVAILABLE", 0.01)] * 2
            + [(ECHO, "NOT_FOUND", 0.01)] * 2  # the caller's business: not an error
            + [("grpc.health.v1.Health/Check", "OK", 0.001)] * 50
            + [("grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "OK", 0.001)]
        )
    )
    assert (calls.total, calls.errors) == (10, 2)
    assert calls.error_ratio == 0.2


def test_p99_follows_prometheus_histogram_quantile() -> None:
    calls = analysis.read_calls(page([(ECHO, "OK", 0.004)] * 98 + [(ECHO, "OK", 0.6)] * 2))
    # rank 99 of 100 falls in the (0.5, 0.75] bucket, halfway: 0.5 + 0.25 * (99-98)/2
    assert analysis.quantile(0.99, calls.buckets) == pytest.approx(0.625)
    assert math.isnan(analysis.quantile(0.99, {}))


def test_the_increase_over_the_window_survives_a_restart() -> None:
    before = analysis.read_calls(page([(ECHO, "OK", 0.01)] * 10))
    after = analysis.read_calls(page([(ECHO, "OK", 0.01)] * 10 + [(ECHO, "INTERNAL", 0.01)] * 5))
    grown = analysis.increase(before, after)
    assert (grown.total, grown.errors) == (5, 5)
    restarted = analysis.read_calls(page([(ECHO, "OK", 0.01)] * 3))  # the counter went down
    assert analysis.increase(after, restarted).total == 3
    assert analysis.increase(None, after).total == 15  # a pod new in the window


def test_judging_a_service() -> None:
    policy = Policy(max_error_ratio=0.05, max_p99_seconds=0.5, min_calls=10)
    healthy = analysis.read_calls(page([(ECHO, "OK", 0.01)] * 20))
    assert analysis.judge("diag", healthy, policy).problems == ()
    failing = healthy + analysis.read_calls(page([(ECHO, "INTERNAL", 0.01)] * 5))
    assert analysis.judge("diag", failing, policy).problems == (
        "error ratio 0.200 over 25 calls > 0.05",
    )
    slow = analysis.read_calls(page([(ECHO, "OK", 2.0)] * 20))
    assert analysis.judge("diag", slow, policy).problems[0].startswith("p99 2.")
    quiet = analysis.judge("diag", Calls(5, 5), policy)
    assert quiet.problems == () and not quiet.judged  # too few calls to tell
    assert "too few calls" in quiet.describe()


def test_a_policy_takes_its_values_with_defaults_and_refuses_nonsense() -> None:
    policy = Policy.from_values({"windowSeconds": 30, "minCalls": 5})
    assert (policy.window_seconds, policy.min_calls, policy.max_error_ratio) == (30, 5, 0.02)
    with pytest.raises(ValueError, match="maxErrorRatio"):
        Policy(max_error_ratio=1.5)
