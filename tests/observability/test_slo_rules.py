"""The Prometheus rules: valid, their promtool unit tests pass, shaped as the SRE workbook says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from observability.generate import slo
from support.prometheus import tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "observability" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yaml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yaml"))


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, cwd=PROMETHEUS_DIR
    )


def test_promtool_check_rules() -> None:
    checked = _promtool("check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_test_rules() -> None:
    """The alerts fire on fast and slow burns and stay silent on health and blips."""
    assert RULE_TESTS
    tested = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_check_local_config() -> None:
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_objective_has_the_three_burn_rate_alerts() -> None:
    alerts = [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    for sli in ("availability", "latency"):
        shapes = {
            (a["labels"]["severity"], a["labels"]["long_window"], a["labels"]["short_window"])
            for a in alerts
            if a["labels"]["slo"] == sli
        }
        assert shapes == {("page", "1h", "5m"), ("page", "6h", "30m"), ("ticket", "3d", "6h")}
    assert all({"summary", "description"} <= set(a["annotations"]) for a in alerts)


def test_client_errors_do_not_spend_the_availability_budget() -> None:
    caller_faults = {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "OUT_OF_RANGE",
        "CANCELLED",
    }
    assert not caller_faults & set(slo.SERVER_ERROR_CODES)
    assert {"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"} <= set(slo.SERVER_ERROR_CODES)
