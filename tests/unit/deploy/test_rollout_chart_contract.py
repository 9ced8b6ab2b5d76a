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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

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
PROMOTED = RolloutRecord("promote", old="blue", new="green", tag=NEW_TAG)

pytestmark = pytest.mark.skipif(
    HELM is None or not (CHART / "Chart.yaml").exists(), reason="needs helm and helm/blueprint"
)


class Rendered:
    def __init__(self, values: Mapping[str, str | int]) -> None:
        assert HELM is not None
        out = subprocess.run(
            [HELM, "template", "blueprint", str(CHART), *helm_overrides(values)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.objects = {
            (obj["kind"], obj["metadata"]["name"]): obj for obj in yaml.safe_load_all(out) if obj
        }

    def deployment(self, service: str, color: Color) -> DeploymentStatus:
        return DeploymentStatus.from_json(self.objects["Deployment", f"{service}-{color}"])

    def selected_color(self, service_name: str) -> str:
        selector: dict[str, Any] = self.objects["Service", service_name]["spec"]["selector"]
        return str(selector["color"])


def _chart_values() -> dict[str, Any]:
    """A fresh install's values, as `helm get values --all` shows them."""
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def _with(values: dict[str, Any], overrides: Mapping[str, str | int]) -> dict[str, Any]:
    """`values` after `--reuse-values --set key.path=value ...`."""
    merged = copy.deepcopy(values)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return merged


def _rolled_out(rendered: Rendered, services: list[str]) -> list[dict[str, Any]]:
    """The rendered Deployments with the status a cluster reports once they rolled out."""
    found = []
    for service in services:
        for color in ("blue", "green"):
            obj = copy.deepcopy(rendered.objects["Deployment", f"{service}-{color}"])
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
        assert (green.desired, green.runs_tag(NEW_TAG)) == (size, True)
        assert previewed.deployment(service, "blue").runs_tag(installed.tags["blue"])
        assert previewed.selected_color(service) == "blue"
        assert previewed.selected_color(f"{service}-preview") == "green"

    state = ReleaseState.read(_with(_chart_values(), values), _rolled_out(previewed, services))
    verified = Verification("green", NEW_TAG, tuple(ServiceCheck(s) for s in services))
    [promote] = plan.promote(state, verified)
    values |= promote.values
    promoted = Rendered(values)
    for service in services:
        assert promoted.selected_color(service) == "green"
        assert promoted.selected_color(f"{service}-preview") == "blue"
        assert promoted.deployment(service, "green").runs_tag(NEW_TAG)
        assert promoted.deployment(service, "blue").desired == size  # kept warm

    state = ReleaseState.read(_with(_chart_values(), values), _rolled_out(promoted, services))
    for step in plan.rollback(dataclasses.replace(state, record=PROMOTED)):
        values |= step.values
    rolled_back = Rendered(values)
    for service in services:
        assert rolled_back.selected_color(service) == "blue"
        assert rolled_back.deployment(service, "green").desired == 0
