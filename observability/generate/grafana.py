"""Just enough of Grafana's dashboard model (schema 39, Grafana 10/11) to build ours.

Plain dictionaries rather than grafana-foundation-sdk: four panel kinds and two
variable kinds are all we use, the output stays byte-stable across SDK releases,
and the generator needs nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"
    exemplar: bool = False


@dataclass
class Panel:
    """One panel; `width` is in Grafana's 24-column grid."""

    kind: str
    title: str
    description: str
    queries: list[Query]
    unit: str = "short"
    width: int = 8
    height: int = PANEL_HEIGHT
    stacked: bool = False
    minimum: float | None = 0
    maximum: float | None = None
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    mappings: list[Json] = field(default_factory=list)
    options: Json = field(default_factory=dict)
    instant: bool = False


def timeseries(title: str, description: str, *queries: Query, **kw: Any) -> Panel:
    return Panel("timeseries", title, description, list(queries), **kw)


def stat(title: str, description: str, query: Query, **kw: Any) -> Panel:
    kw.setdefault("width", 4)
    kw.setdefault("height", 4)
    return Panel("stat", title, description, [query], **kw)


def state_timeline(title: str, description: str, query: Query, **kw: Any) -> Panel:
    return Panel("state-timeline", title, description, [query], **kw)


def heatmap(title: str, description: str, query: Query, **kw: Any) -> Panel:
    return Panel("heatmap", title, description, [query], **kw)


def value_mapping(states: dict[int, tuple[str, str]]) -> list[Json]:
    """Numeric gauge values shown as named, coloured states."""
    options = {
        str(value): {"text": text, "color": color, "index": index}
        for index, (value, (text, color)) in enumerate(sorted(states.items()))
    }
    return [{"type": "value", "options": options}]


def datasource_variable() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    regex: str = "",
    include_all: bool = False,
    description: str = "",
) -> Json:
    """A variable filled from `label_values(...)`; with All, its value is `.*`."""
    variable: Json = {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "regex": regex,
        "refresh": 2,  # on time range change: new instances and methods appear
        "sort": 1,
        "hide": 0,
        "includeAll": include_all,
        "multi": include_all,
        "options": [],
        "current": {"text": "All", "value": "$__all"} if include_all else {},
    }
    if include_all:
        variable["allValue"] = ".*"
    return variable


def _target(query: Query, ref_id: str, panel: Panel) -> Json:
    target: Json = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "legendFormat": query.legend,
        "range": not panel.instant,
        "instant": panel.instant,
        "refId": ref_id,
    }
    if panel.kind == "heatmap":
        target["format"] = "heatmap"
    if query.exemplar:
        target["exemplar"] = True
    return target


def _field_defaults(panel: Panel) -> Json:
    defaults: Json = {"unit": panel.unit}
    if panel.minimum is not None:
        defaults["min"] = panel.minimum
    if panel.maximum is not None:
        defaults["max"] = panel.maximum
    steps = [{"color": "green", "value": None}] + [
        {"color": color, "value": value} for value, color in panel.thresholds
    ]
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    if panel.mappings:
        defaults["mappings"] = panel.mappings
        defaults["color"] = {"mode": "thresholds"}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 25 if panel.stacked else 8,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if panel.thresholds else "off"},
        }
    return defaults


def _options(panel: Panel) -> Json:
    if panel.kind == "timeseries":
        options: Json = {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    elif panel.kind == "heatmap":
        options = {
            "calculate": False,
            "yAxis": {"unit": panel.unit},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "tooltip": {"show": True, "yHistogram": True},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        }
    else:
        options = {"showValue": "never", "mergeValues": True, "rowHeight": 0.9}
    options.update(panel.options)
    return options


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    ref_ids = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(q, ref_ids[i], panel) for i, q in enumerate(panel.queries)],
        "fieldConfig": {"defaults": _field_defaults(panel), "overrides": []},
        "options": _options(panel),
    }


@dataclass
class Row:
    title: str
    panels: list[Panel]
    collapsed: bool = False


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    variables: list[Json],
    rows: list[Row],
    links: list[Json] | None = None,
) -> Json:
    """Lays rows out top to bottom and each row's panels left to right, wrapping at 24."""
    panels: list[Json] = []
    next_id = 1
    y = 0
    for row in rows:
        row_json: Json = {
            "id": next_id,
            "type": "row",
            "title": row.title,
            "collapsed": row.collapsed,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
            "panels": [],
        }
        panels.append(row_json)
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            placed = _panel_json(panel, next_id, x, y)
            (row_json["panels"] if row.collapsed else panels).append(placed)
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["blueprint"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": links or [],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": panels,
    }


def dashboard_link(title: str, uid: str, *, keep_vars: bool = True) -> Json:
    return {
        "title": title,
        "type": "link",
        "url": f"/d/{uid}",
        "icon": "dashboard",
        "includeVars": keep_vars,
        "keepTime": True,
        "targetBlank": False,
        "tooltip": "",
        "asDropdown": False,
        "tags": [],
    }
