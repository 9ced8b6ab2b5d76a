"""`blueprint rollout` end to end against fake helm/kubectl: the exact commands it issues.

No cluster exists here. `helm` and `kubectl` are scripts on PATH that record
their argv and print canned JSON; `kubectl port-forward pod/...` reports a local
port where a real in-process diag server (standing in for a preview pod)
answers, so `verify` makes real health, reflection and smoke calls.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from rollout_fakes import (
    NEW_TAG,
    OLD_TAG,
    FakeTools,
    colour_deployments,
    history,
    release_values,
    set_flags,
)

from blueprint.deploy.rollout import register
from blueprint.deploy.state import RolloutRecord
from blueprint.diag.service import SPEC as DIAG
from blueprint.mesh.discovery import MemoryRegistry
from blueprint.mesh.server import Runtime
from blueprint.mesh.settings import Settings
from support.fake_kube_api import endpoint, endpoint_slice

NS = "shop"
LIVE = {"diag": 2}
SERVICES = {"diag": {"enabled": True, "replicas": 2}}
DEPLOYED = RolloutRecord("deploy", old="blue", new="green", tag=NEW_TAG)
PROMOTED = RolloutRecord("promote", old="blue", new="green", tag=NEW_TAG)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTools]:
    fake = FakeTools.install(tmp_path)
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BLUEPRINT_HELM", raising=False)
    monkeypatch.delenv("BLUEPRINT_KUBECTL", raising=False)
    yield fake


@pytest.fixture
async def preview_pod() -> AsyncIterator[Runtime]:
    """A real diag server standing in for the pod behind `diag-preview`."""
    settings = Settings(
        discovery="memory", instance_id="diag-green-1", propagation_seconds=0, drain_grace_seconds=1
    )
    runtime = Runtime(DIAG, settings, MemoryRegistry())
    await runtime.start()
    yield runtime
    await runtime.stop()


def rollout(*argv: str) -> int:
    """`blueprint rollout --namespace shop ...`, through the argparse wiring cli.py uses."""
    root = argparse.ArgumentParser(prog="blueprint")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["rollout", "--namespace", NS, *argv])
    code: int = args.run(args)
    return code


def previewed(tools: FakeTools, live: dict[str, int] = LIVE) -> None:
    services = {name: {"enabled": True, "replicas": n} for name, n in live.items()}
    tools.release(
        release_values(tags={"blue": OLD_TAG, "green": NEW_TAG}, preview=2, services=services),
        colour_deployments("blue", live, OLD_TAG) + colour_deployments("green", live, NEW_TAG),
        history(DEPLOYED),
    )


def promoted(tools: FakeTools) -> None:
    tools.release(
        release_values(
            active="green", tags={"blue": OLD_TAG, "green": NEW_TAG}, preview=2, services=SERVICES
        ),
        colour_deployments("blue", LIVE, OLD_TAG) + colour_deployments("green", LIVE, NEW_TAG),
        history(DEPLOYED, PROMOTED),
    )


def forward_to(tools: FakeTools, port: int) -> None:
    """diag-preview has one ready endpoint, pod diag-green-1, whose port leads to `port`."""
    slice_ = endpoint_slice(
        "diag-preview-abc", "diag-preview", [endpoint("10.0.0.7", "diag-green-1")]
    )
    tools.answer("kubectl", ["get", "endpointslices"], {"kind": "List", "items": [slice_]})
    tools.answer(
        "kubectl",
        ["port-forward"],
        f"Forwarding from 127.0.0.1:{port} -> 50051\nForwarding from [::1]:{port} -> 50051\n",
        hang=True,
    )


LIVE_ONE = {"diag": 1}  # one pod per colour, so one stand-in server answers for the preview


def test_the_release_is_read_with_helm_and_kubectl(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    tools.release(
        release_values(services={"diag": {"enabled": True}, "gateway": {"enabled": True}}),
        colour_deployments("blue", {"diag": 2, "gateway": 2}, OLD_TAG),
    )
    assert rollout("status") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"release blueprint: live blue ({OLD_TAG}), idle green (chart default), previewReplicas 0"
    )
    assert out[1] == "rollout: none recorded"
    assert out[4].split() == ["diag", "2/2", "ready", "(live)", "absent"]
    assert "settings pinned" not in out[0]  # a fresh install: nothing pinned yet
    assert tools.calls() == [
        ["helm", "history", "blueprint", "--max", "50", "-o", "json", "--namespace", NS],
        ["helm", "get", "values", "blueprint", "--all", "--revision", "1", "-o", "json",
         "--namespace", NS],
        [
            "kubectl", "get", "deployment",
            "diag-blue", "diag-green", "gateway-blue", "gateway-green",
            "--ignore-not-found", "-o", "json", "--namespace", NS,
        ],
    ]  # fmt: skip


def test_deploy_sets_the_idle_tag_and_full_preview_size_then_waits_for_it(
    tools: FakeTools,
) -> None:
    tools.release(
        release_values(services=SERVICES),
        colour_deployments("blue", {"diag": 4}, OLD_TAG),  # an autoscaler made it 4
    )
    assert rollout("--chart", "./chart", "--timeout", "90", "deploy", NEW_TAG) == 0
    [pin] = [arg for arg in tools.upgrades()[0] if arg.startswith("colors.blue.settings=")]
    assert tools.calls()[3:] == [
        [
            "helm", "upgrade", "blueprint", "./chart", "--reset-then-reuse-values",
            "--set-string", f"colors.green.tag={NEW_TAG}",
            "--set", "previewReplicas=4",
            "--set-json", pin,
            "--description", f"blueprint rollout: phase=deploy old=blue new=green tag={NEW_TAG}",
            "--timeout", "90s",
            "--namespace", NS,
        ],
        [
            "kubectl", "rollout", "status", "deployment/diag-green", "--timeout=90s",
            "--namespace", NS,
        ],
    ]  # fmt: skip


async def test_promote_verifies_the_preview_then_flips_only_the_active_colour(
    tools: FakeTools, preview_pod: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, LIVE_ONE)
    forward_to(tools, preview_pod.port)
    assert await asyncio.to_thread(rollout, "promote", "--no-analysis") == 0
    forwards = [call for call in tools.calls() if call[1] == "port-forward"]
    assert forwards == [
        [
            "kubectl", "port-forward", "pod/diag-green-1", ":50051",
            "--address", "127.0.0.1", "--namespace", NS,
        ]
    ]  # fmt: skip
    [upgrade] = tools.upgrades()
    flags = set_flags(upgrade)
    assert flags[0] == ("--set-string", "activeColor=green")
    assert [flag for flag, value in flags[1:]] == ["--set-json"]  # green pinned as verified
    assert flags[1][1].startswith("colors.green.settings=")
    assert "--reset-then-reuse-values" in upgrade
    assert "--no-hooks" in upgrade
    assert "diag: ok (1 pod)" in capsys.readouterr().out


async def test_a_preview_that_is_not_serving_fails_verify_and_is_not_promoted(
    tools: FakeTools, preview_pod: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, LIVE_ONE)
    forward_to(tools, preview_pod.port)
    await preview_pod.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await asyncio.to_thread(rollout, "verify") == 1
    assert "health is NOT_SERVING" in capsys.readouterr().out
    assert await asyncio.to_thread(rollout, "promote") == 1
    assert "not promoting green" in capsys.readouterr().err
    assert tools.upgrades() == []  # no activeColor change issued


def test_a_preview_that_cannot_be_reached_is_not_promoted(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, LIVE_ONE)
    forward_to(tools, 1)
    tools.answer(
        "kubectl",
        ["port-forward"],
        stderr="error: unable to forward port: pods not found",
        exit=1,
        first=True,
    )
    assert rollout("promote") == 1
    assert "port-forward failed" in capsys.readouterr().err
    assert tools.upgrades() == []


def test_an_unready_preview_is_not_probed_nor_promoted(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    tools.release(
        release_values(tags={"blue": OLD_TAG, "green": NEW_TAG}, preview=2, services=SERVICES),
        colour_deployments("blue", LIVE, OLD_TAG) + colour_deployments("green", {"diag": 0}, ""),
        history(DEPLOYED),
    )
    assert rollout("promote") == 1
    assert "diag-green is scaled to 0" in capsys.readouterr().err
    assert [c for c in tools.calls() if c[1] in ("port-forward", "upgrade")] == []


def test_rollback_after_promotion_switches_back_then_scales_the_new_colour_down(
    tools: FakeTools,
) -> None:
    promoted(tools)
    assert rollout("rollback", "--settle", "0") == 0
    switch, drop = tools.upgrades()
    assert set_flags(switch) == [("--set-string", "activeColor=blue")]
    assert set_flags(drop) == [("--set", "previewReplicas=0")]
    assert drop[drop.index("--description") + 1] == (
        f"blueprint rollout: phase=rolled-back old=blue new=green tag={NEW_TAG}"
    )


def test_abort_before_promotion_leaves_the_live_colour_and_drops_the_preview(
    tools: FakeTools,
) -> None:
    previewed(tools)
    assert rollout("abort") == 0
    [drop] = tools.upgrades()
    assert set_flags(drop) == [("--set", "previewReplicas=0")]


def test_scale_down_finishes_a_promoted_rollout(tools: FakeTools) -> None:
    promoted(tools)
    assert rollout("scale-down", "--after", "0") == 0
    [drop] = tools.upgrades()
    assert set_flags(drop) == [("--set", "previewReplicas=0")]
    assert "phase=done" in drop[drop.index("--description") + 1]


def test_scale_down_refuses_at_once_when_nothing_was_promoted(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools)
    assert rollout("scale-down", "--after", "3600") == 1  # refused before any wait
    assert "rollout abort" in capsys.readouterr().err
    assert tools.upgrades() == []


def test_a_failing_helm_is_reported_in_one_line(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    tools.answer("helm", ["history"], stderr="Error: release: not found", exit=1)
    assert rollout("status") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("blueprint rollout status: helm history blueprint")
    assert "release: not found" in err[0]
