"""The rollout's decisions, from release states alone: no helm, no cluster."""

from __future__ import annotations

from typing import Any

import pytest
from rollout_fakes import NEW_TAG, OLD_TAG, colour_deployments, deployment, history, release_values

from blueprint.deploy import plan
from blueprint.deploy.plan import RolloutRefused, ServiceCheck, Verification
from blueprint.deploy.state import Color, ReleaseState, RolloutRecord

LIVE = {"diag": 3, "gateway": 2}  # the release's services and their replica counts
BOTH_TAGS: dict[Color, str] = {"blue": OLD_TAG, "green": NEW_TAG}
DEPLOYED = RolloutRecord("deploy", old="blue", new="green", tag=NEW_TAG)
PROMOTED = RolloutRecord("promote", old="blue", new="green", tag=NEW_TAG)


def _state(
    values: dict[str, Any], deployments: list[dict[str, Any]], *records: RolloutRecord
) -> ReleaseState:
    return ReleaseState.read(values, deployments, history(*records))


def before_deploy() -> ReleaseState:
    return _state(
        release_values(),
        colour_deployments("blue", LIVE, OLD_TAG) + colour_deployments("green", {}, ""),
    )


def previewed(**green: Any) -> ReleaseState:
    """Green runs the new tag at full size, not live yet."""
    deployments = colour_deployments("blue", LIVE, OLD_TAG) + [
        deployment(f"{svc}-green", 3, **({"tag": NEW_TAG} | green.get(svc, {}))) for svc in LIVE
    ]
    return _state(release_values(tags=BOTH_TAGS, preview=3), deployments, DEPLOYED)


def promoted() -> ReleaseState:
    """Green is live; blue idles at full size for a quick rollback."""
    deployments = colour_deployments("green", LIVE, NEW_TAG) + [
        deployment(f"{svc}-blue", 3, tag=OLD_TAG) for svc in LIVE
    ]
    values = release_values(active="green", tags=BOTH_TAGS, preview=3)
    return _state(values, deployments, DEPLOYED, PROMOTED)


def passed(color: Color = "green", tag: str = NEW_TAG) -> Verification:
    return Verification(color, tag, tuple(ServiceCheck(svc) for svc in LIVE))


# -- deploy --------------------------------------------------------------------------------


def test_deploy_puts_the_tag_on_the_idle_colour_at_the_live_size() -> None:
    state = before_deploy()
    [step] = plan.deploy(state, NEW_TAG)
    assert step.values == {
        "colors.green.tag": NEW_TAG,
        "previewReplicas": 3,
        "colors.blue.settings": state.settings,  # the live colour keeps what it runs
    }
    assert step.wait_for == "green"
    assert step.record == DEPLOYED
    assert step.hooks  # the migration Job runs here, and only here


def test_deploy_accepts_a_digest_and_advises_one_for_a_bare_tag() -> None:
    ref = f"{NEW_TAG}@sha256:{'0f' * 32}"
    [step] = plan.deploy(before_deploy(), ref)
    assert step.values["colors.green.tag"] == ref
    assert plan.digest_advice(ref) is None
    assert "pullPolicy Always" in (plan.digest_advice(NEW_TAG) or "")


def test_deploy_unpins_the_idle_colour_and_leaves_a_pinned_live_one() -> None:
    values = release_values()
    for color in ("blue", "green"):
        values["colors"][color]["settings"] = {"defaults": {"env": {"X": color}}}
    state = _state(values, colour_deployments("blue", LIVE, OLD_TAG))
    [step] = plan.deploy(state, NEW_TAG, values_files={"s.yaml": {"defaults": {"env": {}}}})
    assert step.values == {"colors.green.tag": NEW_TAG, "previewReplicas": 3,
                           "colors.green.settings": None}  # fmt: skip
    assert step.files == ("s.yaml",)


def test_a_values_file_may_not_move_what_the_rollout_owns() -> None:
    with pytest.raises(RolloutRefused, match=r"s\.yaml sets activeColor, colors"):
        plan.deploy(
            before_deploy(),
            NEW_TAG,
            values_files={"s.yaml": {"colors": {}, "activeColor": "green"}},
        )


def test_the_preview_matches_what_an_autoscaler_made_of_the_live_colour() -> None:
    state = _state(
        release_values(),
        [deployment("diag-blue", 7), deployment("gateway-blue", 2)],  # HPA: 3 -> 7
    )
    [step] = plan.deploy(state, NEW_TAG)
    assert step.values["previewReplicas"] == 7


@pytest.mark.parametrize(
    "tag", ["", "1.0 0", "../x", "a:b", "-x", "x" * 129, "1.0@sha256:abc", "@sha256:" + "0" * 64]
)
def test_deploy_refuses_what_is_not_an_image_tag(tag: str) -> None:
    with pytest.raises(RolloutRefused, match="not an image reference"):
        plan.deploy(before_deploy(), tag)


def test_deploy_refuses_while_a_promoted_rollout_keeps_the_old_colour_warm() -> None:
    with pytest.raises(RolloutRefused, match="scale-down"):
        plan.deploy(promoted(), "1.2.0")


# -- promote -------------------------------------------------------------------------------


def test_promote_changes_the_active_colour_and_pins_the_new_colours_settings() -> None:
    state = previewed()
    [step] = plan.promote(state, passed())
    # Pinning renders the same pods: green runs exactly these values already.
    assert step.values == {"activeColor": "green", "colors.green.settings": state.settings}
    assert step.wait_for is None
    assert step.record == PROMOTED
    assert not step.hooks


def test_a_failed_verification_means_no_promotion() -> None:
    failed = Verification(
        "green",
        NEW_TAG,
        (ServiceCheck("diag", ("health is NOT_SERVING",)), ServiceCheck("gateway")),
    )
    with pytest.raises(RolloutRefused, match="diag: health is NOT_SERVING"):
        plan.promote(previewed(), failed)


def test_no_promotion_without_any_check() -> None:
    with pytest.raises(RolloutRefused, match="no checks"):
        plan.promote(previewed(), Verification("green", NEW_TAG, ()))


@pytest.mark.parametrize(
    ("green", "problem"),
    [
        ({"diag": {"ready": 2}}, "diag-green not rolled out (2/3 ready"),
        ({"gateway": {"total": 4}}, "gateway-green not rolled out"),  # an old pod still there
        ({"diag": {"stale": True}}, "diag-green not rolled out"),  # new spec not yet seen
        ({"diag": {"tag": "0.9.0"}}, f"not {NEW_TAG}"),
    ],
)
def test_no_promotion_unless_the_preview_is_fully_ready(
    green: dict[str, dict[str, Any]], problem: str
) -> None:
    with pytest.raises(RolloutRefused, match=problem.replace("(", r"\(")):
        plan.promote(previewed(**green), passed())


def test_no_promotion_of_a_preview_smaller_than_the_live_colour() -> None:
    state = _state(
        release_values(tags=BOTH_TAGS, preview=3),
        [
            deployment("diag-blue", 6),
            deployment("gateway-blue", 2),
            *colour_deployments("green", {"diag": 3, "gateway": 3}, NEW_TAG),
        ],
        DEPLOYED,
    )
    with pytest.raises(RolloutRefused, match="diag-green has 3 replicas, the live colour 6"):
        plan.promote(state, passed())


def test_a_verification_of_another_tag_does_not_count() -> None:
    with pytest.raises(RolloutRefused, match=r"verified green at '1\.0\.9'"):
        plan.promote(previewed(), passed(tag="1.0.9"))
    with pytest.raises(RolloutRefused, match="verified blue"):
        plan.promote(previewed(), passed(color="blue"))


# -- scale-down ----------------------------------------------------------------------------


def test_scale_down_finishes_a_promoted_rollout() -> None:
    [step] = plan.scale_down(promoted())
    assert step.values == {"previewReplicas": 0}
    assert step.record == RolloutRecord("done", old="blue", new="green", tag=NEW_TAG)


@pytest.mark.parametrize("state", [before_deploy, previewed], ids=["no-rollout", "unpromoted"])
def test_scale_down_refuses_before_a_promotion(state: Any) -> None:
    with pytest.raises(RolloutRefused, match="abort"):
        plan.scale_down(state())


# -- abort / rollback ----------------------------------------------------------------------


def test_rollback_after_promotion_returns_to_the_old_colour_then_scales_the_new_down() -> None:
    switch, drop = plan.rollback(promoted(), settle_seconds=7)
    assert switch.values == {"activeColor": "blue"}  # blue is warm: no scale-up first
    assert switch.settle_seconds == 7
    assert drop.values == {"previewReplicas": 0}  # green, idle by then
    assert drop.record == RolloutRecord("rolled-back", old="blue", new="green", tag=NEW_TAG)


def test_abort_before_promotion_only_drops_the_preview() -> None:
    steps = plan.rollback(previewed())
    assert [step.values for step in steps] == [{"previewReplicas": 0}]  # blue stays live


def test_rollback_after_scale_down_brings_the_old_colour_back_first() -> None:
    done = RolloutRecord("done", old="blue", new="green", tag=NEW_TAG)
    state = _state(
        release_values(active="green", tags=BOTH_TAGS, preview=0),
        colour_deployments("green", LIVE, NEW_TAG) + colour_deployments("blue", {}, OLD_TAG),
        DEPLOYED,
        PROMOTED,
        done,
    )
    up, switch, drop = plan.rollback(state)
    assert (up.values, up.wait_for) == ({"previewReplicas": 3}, "blue")
    assert switch.values == {"activeColor": "blue"}
    assert drop.values == {"previewReplicas": 0}


def test_an_interrupted_rollback_continues_where_it_stopped() -> None:
    going_back = RolloutRecord("rollback", old="blue", new="green", tag=NEW_TAG)
    state = _state(
        release_values(active="blue", tags=BOTH_TAGS, preview=3),
        colour_deployments("blue", LIVE, OLD_TAG) + colour_deployments("green", LIVE, NEW_TAG),
        PROMOTED,
        going_back,
    )
    assert [step.values for step in plan.rollback(state)] == [{"previewReplicas": 0}]
    with pytest.raises(RolloutRefused, match="rollback"):
        plan.deploy(state, "1.2.0")


def test_nothing_to_roll_back_without_a_rollout_or_after_one_was_rolled_back() -> None:
    with pytest.raises(RolloutRefused, match="no rollout to roll back"):
        plan.rollback(before_deploy())
    rolled_back = RolloutRecord("rolled-back", old="blue", new="green", tag=NEW_TAG)
    state = _state(release_values(), colour_deployments("blue", LIVE, OLD_TAG), rolled_back)
    with pytest.raises(RolloutRefused, match="no rollout to roll back"):
        plan.rollback(state)
