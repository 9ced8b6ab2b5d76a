"""Reading a release: the chart's values contract, Deployments, the rollout's record."""

from __future__ import annotations

import pytest
from rollout_fakes import OLD_TAG, deployment, history, release_values

from blueprint.deploy.state import (
    DeploymentStatus,
    History,
    ReleaseError,
    ReleaseState,
    RolloutRecord,
    image_ref,
)

DIGEST = "sha256:" + "ab" * 32


def test_values_give_colours_tags_and_enabled_services_with_default_replicas() -> None:
    values = release_values(
        services={
            "diag": {"enabled": True, "replicas": 4},
            "gateway": {"enabled": True},  # falls back to defaults.replicas (2)
            "media": {"enabled": False, "replicas": 9},
        }
    )
    state = ReleaseState.read(values)
    assert (state.active, state.idle) == ("blue", "green")
    assert state.tags == {"blue": OLD_TAG, "green": ""}
    assert state.replicas == {"diag": 4, "gateway": 2}
    assert state.record is None


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"colors": {}}, "activeColor"),
        (release_values() | {"activeColor": "red"}, "not blue or green"),
        (release_values() | {"services": None}, "not a Blueprint release"),
        ({}, "not a Blueprint release"),
    ],
)
def test_values_that_are_not_a_blueprint_release_are_refused(
    values: dict[str, object], problem: str
) -> None:
    with pytest.raises(ReleaseError, match=problem):
        ReleaseState.read(values)


def test_the_live_count_is_the_clusters_when_an_autoscaler_moved_it() -> None:
    state = ReleaseState.read(release_values(), [deployment("diag-blue", 8)])
    assert state.live_replicas("diag") == 8
    assert state.live_replicas("gateway") == 2  # no Deployment seen: the values say


def test_a_deployment_is_rolled_out_only_when_every_pod_is_current_and_ready() -> None:
    assert DeploymentStatus.from_json(deployment("d", 3)).rolled_out
    assert not DeploymentStatus.from_json(deployment("d", 3, ready=2)).rolled_out
    assert not DeploymentStatus.from_json(deployment("d", 3, updated=1)).rolled_out
    assert not DeploymentStatus.from_json(deployment("d", 3, total=5)).rolled_out
    assert not DeploymentStatus.from_json(deployment("d", 3, stale=True)).rolled_out


@pytest.mark.parametrize(
    ("image", "ref"),
    [
        ("blueprint:1.2", "1.2"),
        ("registry:5000/team/blueprint:1.2-rc1", "1.2-rc1"),
        ("registry:5000/blueprint", ""),
        (f"blueprint:1.2@{DIGEST}", f"1.2@{DIGEST}"),
        (f"registry:5000/blueprint@{DIGEST}", f"@{DIGEST}"),
    ],
)
def test_image_refs(image: str, ref: str) -> None:
    assert image_ref(image) == ref


def test_a_digest_pinned_deployment_runs_only_that_digest() -> None:
    pinned = DeploymentStatus("d", 1, images=(f"registry.example/blueprint:1.2@{DIGEST}",))
    assert pinned.runs(f"1.2@{DIGEST}")
    assert not pinned.runs("1.2")
    assert not pinned.runs(f"1.2@sha256:{'cd' * 32}")


def test_the_record_round_trips_through_a_helm_description() -> None:
    record = RolloutRecord("promote", old="green", new="blue", tag="2.0.1")
    assert record.describe() == "blueprint rollout: phase=promote old=green new=blue tag=2.0.1"
    assert RolloutRecord.parse(record.describe()) == record
    assert RolloutRecord.parse("Upgrade complete") is None
    assert RolloutRecord.parse("blueprint rollout: phase=party old=blue new=green") is None


def test_the_record_skips_failed_upgrades_and_other_peoples_upgrades() -> None:
    deployed = RolloutRecord("deploy", old="blue", new="green", tag="1.1.0")
    promoted = RolloutRecord("promote", old="blue", new="green", tag="1.1.0")
    revisions = history(deployed, promoted, "Upgrade complete")
    revisions[2]["status"] = "failed"  # the promote never took effect
    assert History.read(reversed(revisions)).record() == deployed


def test_the_record_carries_the_chart_its_revision_was_made_with() -> None:
    deployed = RolloutRecord("deploy", old="blue", new="green", tag="1.1.0")
    record = History.read(history(deployed, chart="blueprint-0.9.1")).record()
    assert record is not None and record.chart == "blueprint-0.9.1"


def test_pinned_colours_workers_and_the_analysis_policy_are_read_from_values() -> None:
    values = release_values() | {
        "workers": {"clicks": {}, "off": {"enabled": False}, "two": {"replicas": 2}},
        "rollout": {"analysis": {"windowSeconds": 30, "maxErrorRatio": 0.1}},
    }
    values["colors"]["blue"]["settings"] = {"defaults": {"env": {"A": "1"}}}
    state = ReleaseState.read(values)
    assert state.pinned == {"blue"}
    assert state.workers == {"clicks": 2, "two": 2}  # defaults.replicas is 2 here
    assert state.worker_workloads == ["clicks-worker", "two-worker"]
    assert (state.analysis.window_seconds, state.analysis.max_error_ratio) == (30, 0.1)
    assert state.analysis.min_calls == 50  # the default
    assert set(state.settings) == {"defaults", "services", "workers"}
