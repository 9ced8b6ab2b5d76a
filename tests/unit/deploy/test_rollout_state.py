"""Reading a release: the chart's values contract, Deployments, the rollout's record."""

from __future__ import annotations

import pytest
from rollout_fakes import OLD_TAG, deployment, history, release_values

from blueprint.deploy.state import (
    DeploymentStatus,
    ReleaseError,
    ReleaseState,
    RolloutRecord,
    image_tag,
)


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
    ("image", "tag"),
    [
        ("blueprint:1.2", "1.2"),
        ("registry:5000/team/blueprint:1.2-rc1", "1.2-rc1"),
        ("registry:5000/blueprint", ""),
        ("blueprint:1.2@sha256:abc", "1.2"),
    ],
)
def test_image_tags(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_the_record_round_trips_through_a_helm_description() -> None:
    record = RolloutRecord("promote", old="green", new="blue", tag="2.0.1")
    assert record.describe() == "blueprint rollout: phase=promote old=green new=blue tag=2.0.1"
    assert RolloutRecord.parse(record.describe()) == record
    assert RolloutRecord.parse("Upgrade complete") is None
    assert RolloutRecord.parse("blueprint rollout: phase=party old=blue new=green") is None


def test_the_latest_record_skips_failed_upgrades_and_other_peoples_upgrades() -> None:
    deployed = RolloutRecord("deploy", old="blue", new="green", tag="1.1.0")
    promoted = RolloutRecord("promote", old="blue", new="green", tag="1.1.0")
    revisions = history(deployed, promoted, "Upgrade complete")
    revisions[2]["status"] = "failed"  # the promote never took effect
    assert RolloutRecord.latest(reversed(revisions)) == deployed
