"""The generated dashboards: fresh, well formed, every query valid PromQL, and every
metric a query reads one that the code exports.

Whether each query also returns data from a real mesh is test_prometheus.py's job.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from blueprint.infra.cache import CacheMetrics
from blueprint.infra.guard import StoreMetrics
from blueprint.infra.queue import QueueMetrics
from blueprint.mesh.telemetry.metrics import Metrics
from blueprint.shortener.app import ShortenerMetrics
from observability.generate import render
from support.prometheus import tool

DASHBOARDS = sorted(render.DASHBOARD_DIR.glob("*.json"))
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def _load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels = list(board["panels"])
    for panel in list(panels):
        panels += panel.get("panels", [])
    return panels


def _exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(board) for t in p.get("targets", [])]


def test_committed_assets_match_the_generator() -> None:
    assert render.stale() == [], "run 'make dashboards'"


def test_the_five_dashboards_exist_with_distinct_uids() -> None:
    uids = [_load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids)) == 5


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_well_formed(path: Path) -> None:
    board = _load(path)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(board)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            used = set(VARIABLE.findall(target["expr"])) - BUILTIN_VARIABLES - {"1"}
            assert used <= set(variables), f"{panel['title']}: undefined {used - set(variables)}"


def test_service_variable_is_the_grpc_service_of_rpc_method() -> None:
    board = _load(render.DASHBOARD_DIR / "service.json")
    service = next(v for v in board["templating"]["list"] if v["name"] == "service")
    literal = re.fullmatch(r"/(.*)/", service["regex"])  # a JavaScript regex literal
    assert literal
    pattern = re.compile(literal.group(1))
    assert "rpc_method" in service["definition"]
    match = pattern.search("blueprint.diag.v1.Diagnostics/Echo")
    assert match and match.group(1) == "blueprint.diag.v1.Diagnostics"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule; no server needed."""
    promtool = tool("promtool")
    values = {
        "__rate_interval": "30s",
        "service": "blueprint.diag.v1.Diagnostics",
        "method": ".*",
        "instance": ".*",
        "target": ".*",
        "cache": ".*",
        "stream": ".*",
    }
    groups = []
    for path in DASHBOARDS:
        rules = []
        for n, expr in enumerate(_exprs(_load(path))):
            for name, value in values.items():
                expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
            rules.append({"record": f"dashboard_query_{n}", "expr": expr})
        groups.append({"name": path.stem, "rules": rules})
    rules_file = tmp_path / "dashboard-queries.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}, width=1000))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- metric names -----------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads."""
    bare = _STRINGS.sub('""', expr)
    for pattern in (_GROUPINGS, _MATCHERS, _RANGES):
        bare = pattern.sub(" ", bare)
    names = set()
    for match in _NAME.finditer(bare):
        followed_by = bare[match.end() :].lstrip()[:1]
        if followed_by == "(" or match.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation, not a metric
        names.add(match.group())
    return names


def exported_names() -> set[str]:
    """Every series name the services' metric classes can export, as Prometheus sees it."""
    registry = CollectorRegistry()
    Metrics(registry)
    CacheMetrics(registry)
    QueueMetrics(registry)
    ShortenerMetrics(registry)
    StoreMetrics(registry)
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    names = {"up"}  # Prometheus's own, per target
    for family in registry.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"),
            "gauge": ("",),
            "info": ("_info",),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def recorded_names() -> set[str]:
    rule_files = sorted((render.RULES_DIR).glob("*.yaml"))
    return {
        rule["record"]
        for path in rule_files
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def test_metric_names_are_found_in_queries() -> None:
    expr = (
        'sum by (cache, result) (rate(blueprint_cache_lookups_total{cache=~"$cache"}[5m]))'
        " / on (job) group_left () max(blueprint_queue_pending) or vector(0)"
        ' and label_replace(up, "a", "$1", "b", "(.*)")'
    )
    assert metric_names(expr) == {"blueprint_cache_lookups_total", "blueprint_queue_pending", "up"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_metric_a_dashboard_reads_is_exported_by_the_code(path: Path) -> None:
    known = exported_names() | recorded_names()
    unknown = {name: expr for expr in _exprs(_load(path)) for name in metric_names(expr) - known}
    assert not unknown, f"metrics no code exports: {sorted(unknown)}"
