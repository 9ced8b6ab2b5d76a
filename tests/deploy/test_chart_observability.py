"""Scraping, dashboards and the requests-per-second metric fit together.

The PodMonitor appears only where the Prometheus Operator's CRDs exist (or when
forced); every dashboard JSON in the chart becomes a sidecar-labelled ConfigMap;
the prometheus-adapter rule in k8s/ serves exactly the metric the HPA asks for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from chart_render import (
    CHART,
    FIXED_SECRETS,
    KUBE_VERSION,
    ROOT,
    helm_binary,
    of_kind,
    parse,
    render,
)

EVERYTHING = CHART / "ci" / "everything-on-values.yaml"


def test_no_monitor_without_the_operator() -> None:
    kinds = {d["kind"] for d in render((), FIXED_SECRETS)}
    assert not kinds & {"PodMonitor", "ServiceMonitor"}


def test_pod_monitor_when_the_cluster_serves_the_crd() -> None:
    docs = render(
        (), FIXED_SECRETS, extra=("--api-versions", "monitoring.coreos.com/v1/PodMonitor")
    )
    (monitor,) = of_kind(docs, "PodMonitor").values()
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    (selector,) = monitor["spec"]["selector"]["matchExpressions"]
    assert selector["values"] == ["server", "worker"]
    assert "color" in monitor["spec"]["podTargetLabels"]


def test_service_monitor_on_request() -> None:
    docs = render((), (*FIXED_SECRETS, "monitoring.kind=ServiceMonitor", "monitoring.force=true"))
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # Workers too: each has a headless Service over its pods, with a metrics port.
    (selector,) = monitor["spec"]["selector"]["matchExpressions"]
    assert selector["values"] == ["server", "worker"]
    worker = of_kind(docs, "Service")["shortener-clicks-worker"]
    assert worker["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    assert worker["spec"]["clusterIP"] == "None"
    assert {p["name"] for p in worker["spec"]["ports"]} == {"grpc", "metrics"}


def test_every_dashboard_in_the_chart_becomes_a_sidecar_configmap() -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    configmaps = [
        cm
        for cm in of_kind(render((), FIXED_SECRETS), "ConfigMap").values()
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(configmaps) == len(files)
    by_file = {key: value for cm in configmaps for key, value in cm["data"].items()}
    for path in files:
        assert json.loads(by_file[path.name]) == json.loads(path.read_text())


def test_a_new_dashboard_file_is_picked_up(tmp_path: Path) -> None:
    chart = tmp_path / "blueprint"
    shutil.copytree(CHART, chart)
    (chart / "dashboards" / "queue_lag.json").write_text('{"title": "Queue lag", "panels": []}')
    helm = helm_binary()
    assert helm
    command = [helm, "template", "blueprint", str(chart), "-n", "blueprint"]
    command += ["--kube-version", KUBE_VERSION, "--show-only", "templates/dashboards.yaml"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    configmaps = of_kind(parse(output), "ConfigMap")
    added = configmaps["blueprint-dashboard-queue-lag"]
    assert json.loads(added["data"]["queue_lag.json"])["title"] == "Queue lag"
    assert added["metadata"]["annotations"]["grafana_folder"] == "Blueprint"


def test_the_adapter_rule_serves_the_metric_the_hpa_reads() -> None:
    (configmap,) = yaml.safe_load_all((ROOT / "k8s" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"].startswith("rpc_server_call_duration_seconds_count{")
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert "rate(<<.Series>>{<<.LabelMatchers>>" in rule["metricsQuery"]

    hpa_metrics = {
        metric["pods"]["metric"]["name"]
        for hpa in of_kind(render((EVERYTHING,)), "HorizontalPodAutoscaler").values()
        for metric in hpa["spec"]["metrics"]
        if metric["type"] == "Pods"
    }
    assert hpa_metrics == {rule["name"]["as"]}
