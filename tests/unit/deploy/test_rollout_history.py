"""A rollout never acts on a revision that did not take effect, nor runs hooks it need not.

Issue 9, points 1 and 2: `helm get values` reads the newest revision even when it
failed, so a `promote` re-run after a failed switch read green as live and "promoted"
blue, scaling the new release away; and every step ran the migration hook, so a
rollback failed whenever the newer image's migration did.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
from rollout_fakes import (
    NEW_TAG,
    OLD_TAG,
    FakeTools,
    colour_deployments,
    history,
    release_values,
)

from blueprint.deploy import plan
from blueprint.deploy.plan import RolloutRefused, ServiceCheck, Verification
from blueprint.deploy.rollout import register
from blueprint.deploy.state import ReleaseState, RolloutRecord

NS = "shop"
LIVE = {"diag": 2}
SERVICES = {"diag": {"enabled": True, "replicas": 2}}
BOTH = {"blue": OLD_TAG, "green": NEW_TAG}
DEPLOYED = RolloutRecord("deploy", old="blue", new="green", tag=NEW_TAG)
PROMOTED = RolloutRecord("promote", old="blue", new="green", tag=NEW_TAG)
HOOK_FAILED = (
    "Error: UPGRADE FAILED: pre-upgrade hooks failed: 1 error occurred:\n"
    "\t* job shortener-migrate failed: BackoffLimitExceeded\n"
)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTools]:
    fake = FakeTools.install(tmp_path)
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BLUEPRINT_HELM", raising=False)
    monkeypatch.delenv("BLUEPRINT_KUBECTL", raising=False)
    yield fake


def rollout(*argv: str) -> int:
    root = argparse.ArgumentParser(prog="blueprint")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["rollout", "--namespace", NS, *argv])
    code: int = args.run(args)
    return code


def both_running() -> list[dict[str, object]]:
    return colour_deployments("blue", LIVE, OLD_TAG) + colour_deployments("green", LIVE, NEW_TAG)


# -- point 1: the last deployed revision, never a failed or pending one ----------------------


def test_promote_after_a_failed_switch_refuses_and_says_how_to_recover(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    # Revision 3 tried `activeColor=green` and failed part way; revision 2 (the deploy)
    # is still the deployed one. The failed revision's values say green is live.
    revisions = history(DEPLOYED, 'Upgrade "blueprint" failed: timed out', failed=1)
    tools.release(
        release_values(tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        revisions,
        latest_values=release_values(active="green", tags=BOTH, preview=2, services=SERVICES),
    )
    assert rollout("promote") == 1
    err = capsys.readouterr().err
    assert "revision 3 failed" in err
    assert f"helm rollback blueprint 2 --namespace {NS}" in err
    assert tools.upgrades() == []  # neither colour touched


@pytest.mark.parametrize("action", ["deploy", "verify", "promote", "scale-down", "rollback"])
def test_no_step_acts_while_the_latest_revision_is_pending(
    action: str, tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    tools.release(
        release_values(tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        history(DEPLOYED, PROMOTED, pending=1),
    )
    argv = {"deploy": ["deploy", "1.2.0"], "scale-down": ["scale-down", "--after", "0"]}
    assert rollout(*argv.get(action, [action])) == 1
    err = capsys.readouterr().err
    assert "revision 3 is pending-upgrade" in err
    assert tools.upgrades() == []
    assert not [c for c in tools.calls() if c[1] == "port-forward"]


def test_status_still_shows_the_release_and_why_steps_refuse(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    tools.release(
        release_values(tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        history(DEPLOYED, "Upgrade failed", failed=1),
    )
    assert rollout("status") == 0
    out = capsys.readouterr().out
    assert "live blue" in out
    assert "revision 3 failed" in out


def test_values_come_from_the_deployed_revision(tools: FakeTools) -> None:
    tools.release(
        release_values(tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        history(DEPLOYED, "Upgrade failed", "Rollback to 2"),  # a helm rollback fixed it
    )
    assert rollout("status") == 0
    gets = [c for c in tools.calls() if c[1:3] == ["get", "values"]]
    assert gets == [
        ["helm", "get", "values", "blueprint", "--all", "--revision", "4", "-o", "json",
         "--namespace", NS],
    ]  # fmt: skip


def test_after_a_helm_rollback_the_record_is_the_revision_rolled_back_to() -> None:
    # 2 deploy, 3 promote, 4 scale-down (done), then `helm rollback blueprint 3`.
    done = RolloutRecord("done", old="blue", new="green", tag=NEW_TAG)
    revisions = history(DEPLOYED, PROMOTED, done, "Rollback to 3")
    state = ReleaseState.read(
        release_values(active="green", tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        revisions,
    )
    assert state.record == PROMOTED


def promoted_state() -> ReleaseState:
    return ReleaseState.read(
        release_values(active="green", tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        history(DEPLOYED, PROMOTED),
    )


def test_promote_needs_a_deployed_preview_of_the_idle_colour() -> None:
    # Green is live after a promotion: "promoting" the idle blue would reverse it.
    checks = Verification("blue", OLD_TAG, (ServiceCheck("diag"),))
    with pytest.raises(RolloutRefused, match="nothing to promote"):
        plan.promote(promoted_state(), checks)


def test_promote_refuses_a_preview_deployed_for_the_other_colour() -> None:
    # The record says green was deployed, but blue is idle (someone flipped activeColor).
    state = ReleaseState.read(
        release_values(active="green", tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        history(DEPLOYED),
    )
    with pytest.raises(RolloutRefused, match="deployed to green, but blue is idle"):
        plan.promote(state, Verification("blue", OLD_TAG, (ServiceCheck("diag"),)))


# -- point 2: only `deploy` runs hooks; every step bounds helm's wait ------------------------


def test_rollback_skips_the_migration_hook_that_would_fail(tools: FakeTools) -> None:
    tools.release(
        release_values(active="green", tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        history(DEPLOYED, PROMOTED),
    )
    # helm fails whenever it runs the hooks: the newer image's migration cannot run now.
    tools.answer("helm", ["upgrade", "--no-hooks"])
    tools.answer("helm", ["upgrade"], stderr=HOOK_FAILED, exit=1)
    assert rollout("rollback", "--settle", "0") == 0
    switch, drop = tools.upgrades()
    for upgrade in (switch, drop):
        assert "--no-hooks" in upgrade
        assert upgrade[upgrade.index("--timeout") + 1] == "600s"


def test_scale_down_skips_hooks(tools: FakeTools) -> None:
    tools.release(
        release_values(active="green", tags=BOTH, preview=2, services=SERVICES),
        both_running(),
        history(DEPLOYED, PROMOTED),
    )
    assert rollout("scale-down", "--after", "0") == 0
    [drop] = tools.upgrades()
    assert "--no-hooks" in drop


def test_deploy_runs_the_migration_hook_and_gives_helm_the_timeout(tools: FakeTools) -> None:
    tools.release(release_values(services=SERVICES), colour_deployments("blue", LIVE, OLD_TAG))
    assert rollout("--timeout", "900", "deploy", NEW_TAG) == 0
    [upgrade] = tools.upgrades()
    assert "--no-hooks" not in upgrade  # migrations run here, once, before the new pods
    assert upgrade[upgrade.index("--timeout") + 1] == "900s"
