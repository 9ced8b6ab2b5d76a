"""The generated dashboards: fresh, well formed, and every query valid PromQL.

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


def test_the_three_dashboards_exist_with_distinct_uids() -> None:
    uids = [_load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids)) == 3


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
