"""The rollout's value changes, rendered by the real chart with the real helm.

The decisions are tested on their own; this checks they mean what the chart
means: a deploy step puts the tag on the idle colour's Deployments at
`previewReplicas` behind `<svc>-preview`, promoting flips the Services'
selectors, rolling back flips them back and empties the failed colour.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_fakes import history

from blueprint.deploy import plan
from blueprint.deploy.plan import ServiceCheck, Verification
from blueprint.deploy.runner import helm_overrides
from blueprint.deploy.state import Color, DeploymentStatus, ReleaseState, RolloutRecord

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "blueprint"
HELM = (
    os.environ.get("BLUEPRINT_HELM")
    or shutil.which("helm")
    or (str(ROOT / ".tools/bin/helm") if (ROOT / ".tools/bin/helm").exists() else None)
)
NEW_TAG = "1.1.0"
DEPLOYED = RolloutRecord("deploy", old="blue", new="green", tag=NEW_TAG)
PROMOTED = RolloutRecord("promote", old="blue", new="green", tag=NEW_TAG)

pytestmark = pytest.mark.skipif(
    HELM is None or not (CHART / "Chart.yaml").exists(), reason="needs helm and helm/blueprint"
)


class Rendered:
    """`helm template` of the chart with values files (-f) and then the step's values."""

    def __init__(self, values: Mapping[str, Any], files: Sequence[str | Path] = ()) -> None:
        assert HELM is not None
        out = subprocess.run(
            [
                HELM, "template", "blueprint", str(CHART),
                *(arg for path in files for arg in ("-f", str(path))),
                *helm_overrides(values),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
        self.objects = {
            (obj["kind"], obj["metadata"]["name"]): obj for obj in yaml.safe_load_all(out) if obj
        }

    def deployment(self, service: str, color: Color) -> DeploymentStatus:
        return DeploymentStatus.from_json(self.objects["Deployment", f"{service}-{color}"])

    def pod_template(self, workload: str, color: Color) -> dict[str, Any]:
        found: dict[str, Any] = self.objects["Deployment", f"{workload}-{color}"]["spec"][
            "template"
        ]
        return found

    def config(self, workload: str, color: Color) -> dict[str, str]:
        found: dict[str, str] = self.objects["ConfigMap", f"{workload}-{color}-config"]["data"]
        return found

    def selected_color(self, service_name: str) -> str:
        selector: dict[str, Any] = self.objects["Service", service_name]["spec"]["selector"]
        return str(selector["color"])


def _chart_values() -> dict[str, Any]:
    """A fresh install's values, as `helm get values --all` shows them."""
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def _merged(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """helm's coalescing of a values file over values: maps merge, null deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _with(
    values: dict[str, Any], overrides: Mapping[str, Any], files: Sequence[Path] = ()
) -> dict[str, Any]:
    """`values` after `--reuse-values -f FILE ... --set key.path=value ...`."""
    merged = copy.deepcopy(values)
    for path in files:
        merged = _merged(merged, yaml.safe_load(path.read_text()))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(value)
    return merged


def _rolled_out(rendered: Rendered) -> list[dict[str, Any]]:
    """The rendered services' and workers' Deployments, with the status a cluster
    reports once they rolled out."""
    found = []
    for (kind, _), doc in rendered.objects.items():
        component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
        if kind != "Deployment" or component not in ("server", "worker"):
            continue
        obj = copy.deepcopy(doc)
        n = obj["spec"].get("replicas", 1)
        obj["metadata"]["generation"] = 1
        obj["status"] = {
            "observedGeneration": 1,
            "replicas": n,
            "readyReplicas": n,
            "updatedReplicas": n,
        }
        found.append(obj)
    return found


def test_deploy_promote_and_rollback_mean_what_the_chart_renders() -> None:
    installed = ReleaseState.read(_chart_values())
    services = installed.services
    assert services, "the chart enables no service"

    [deploy] = plan.deploy(installed, NEW_TAG)
    values = dict(deploy.values)
    size = values["previewReplicas"]
    previewed = Rendered(values)
    for service in services:
        green = previewed.deployment(service, "green")
        assert (green.desired, green.runs(NEW_TAG)) == (size, True)
        assert previewed.deployment(service, "blue").runs(installed.tags["blue"])
        assert previewed.selected_color(service) == "blue"
        assert previewed.selected_color(f"{service}-preview") == "green"

    state = ReleaseState.read(
        _with(_chart_values(), values), _rolled_out(previewed), history(DEPLOYED)
    )
    verified = Verification("green", NEW_TAG, tuple(ServiceCheck(s) for s in services))
    [promote] = plan.promote(state, verified)
    values |= promote.values
    promoted = Rendered(values)
    for service in services:
        assert promoted.selected_color(service) == "green"
        assert promoted.selected_color(f"{service}-preview") == "blue"
        assert promoted.deployment(service, "green").runs(NEW_TAG)
        assert promoted.deployment(service, "blue").desired == size  # kept warm

    state = ReleaseState.read(_with(_chart_values(), values), _rolled_out(promoted))
    for step in plan.rollback(dataclasses.replace(state, record=PROMOTED)):
        values |= step.values
    rolled_back = Rendered(values)
    for service in services:
        assert rolled_back.selected_color(service) == "blue"
        assert rolled_back.deployment(service, "green").desired == 0


def _chart() -> str:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return f"{meta['name']}-{meta['version']}"


def test_a_settings_change_stays_on_the_idle_colour_until_promote(tmp_path: Path) -> None:
    """Issue 9, point 3: settings go out blue-green, like an image."""
    change = tmp_path / "settings.yaml"
    change.write_text("services:\n  diag:\n    env:\n      BLUEPRINT_DIAG_SLOWDOWN: '2'\n")
    installed = ReleaseState.read(_chart_values(), (), history())
    services = installed.services
    before = Rendered({})

    # `rollout deploy 1.1.0 -f settings.yaml`: the live colour keeps its pods and settings.
    [deploy] = plan.deploy(
        installed, NEW_TAG, values_files={str(change): yaml.safe_load(change.read_text())}
    )
    assert deploy.files == (str(change),)
    values = dict(deploy.values)
    previewed = Rendered(values, deploy.files)
    for service in services:
        assert previewed.pod_template(service, "blue") == before.pod_template(service, "blue")
        assert previewed.config(service, "blue") == before.config(service, "blue")
    assert previewed.config("diag", "green")["BLUEPRINT_DIAG_SLOWDOWN"] == "2"
    assert "BLUEPRINT_DIAG_SLOWDOWN" not in previewed.config("diag", "blue")

    # promote: selectors move, no pod template changes in either colour.
    all_values = _with(_chart_values(), values, [change])
    state = ReleaseState.read(all_values, _rolled_out(previewed), history(DEPLOYED))
    verified = Verification("green", NEW_TAG, tuple(ServiceCheck(s) for s in services))
    [promote] = plan.promote(state, verified, chart=_chart())
    values |= promote.values
    promoted = Rendered(values, deploy.files)
    for service in services:
        for color in ("blue", "green"):
            assert promoted.pod_template(service, color) == previewed.pod_template(service, color)
        assert promoted.selected_color(service) == "green"

    # A later settings change, with a plain `helm upgrade --reuse-values -f`, waits for
    # the next deploy: both colours are pinned now.
    later = tmp_path / "later.yaml"
    later.write_text("defaults:\n  env:\n    BLUEPRINT_LOG_LEVEL: DEBUG\n")
    unchanged = Rendered(values, (change, later))
    for service in services:
        for color in ("blue", "green"):
            assert unchanged.pod_template(service, color) == promoted.pod_template(service, color)

    # rollback: blue takes the traffic back with the settings it had.
    state = ReleaseState.read(
        _with(_chart_values(), values, [change]),
        _rolled_out(promoted),
        history(DEPLOYED, PROMOTED),
    )
    for step in plan.rollback(state):
        values |= step.values
    rolled_back = Rendered(values, deploy.files)
    for service in services:
        assert rolled_back.pod_template(service, "blue") == before.pod_template(service, "blue")
        assert rolled_back.selected_color(service) == "blue"


def test_promote_refuses_a_chart_other_than_the_deployed_one() -> None:
    previewed = Rendered({"colors.green.tag": NEW_TAG, "previewReplicas": 2})
    services = ReleaseState.read(_chart_values()).services
    state = ReleaseState.read(
        _with(_chart_values(), {"colors.green.tag": NEW_TAG, "previewReplicas": 2}),
        _rolled_out(previewed),
        history(DEPLOYED, chart="blueprint-0.1.0"),
    )
    verified = Verification("green", NEW_TAG, tuple(ServiceCheck(s) for s in services))
    with pytest.raises(plan.RolloutRefused, match=r"deployed with chart blueprint-0\.1\.0"):
        plan.promote(state, verified, chart=_chart())
    [step] = plan.promote(state, verified, chart=_chart(), allow_chart_change=True)
    assert step.values["activeColor"] == "green"
