"""Verification reaches every pod, workers included, and promotion is watched afterwards.

Issue 9, point 5. Real diag servers stand in for the pods; `kubectl` is the fake on
PATH, answering EndpointSlices and pods like the API and forwarding each pod's
port to its stand-in, so every health check, smoke call and /metrics scrape is a
real call over a socket.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from rollout_fakes import (
    NEW_TAG,
    OLD_TAG,
    FakeTools,
    colour_deployments,
    deployment,
    history,
    release_values,
    set_flags,
)

from blueprint import catalog
from blueprint.deploy import commands
from blueprint.deploy.rollout import register
from blueprint.deploy.runner import Runner, Tools
from blueprint.deploy.state import RolloutRecord
from blueprint.diag.service import SPEC as DIAG
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.discovery import MemoryRegistry
from blueprint.mesh.server import Runtime
from blueprint.mesh.settings import Settings
from support.fake_kube_api import endpoint, endpoint_slice

NS = "shop"
GRPC, METRICS = 50051, 9464
SERVICES = {"diag": {"enabled": True, "replicas": 2}}
BOTH = {"blue": OLD_TAG, "green": NEW_TAG}
DEPLOYED = RolloutRecord("deploy", old="blue", new="green", tag=NEW_TAG)
PROMOTED = RolloutRecord("promote", old="blue", new="green", tag=NEW_TAG)
ANALYSIS = {"enabled": True, "windowSeconds": 30, "maxErrorRatio": 0.05,
            "maxP99Seconds": 1.0, "minCalls": 10}  # fmt: skip


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTools]:
    fake = FakeTools.install(tmp_path)
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield fake


@pytest.fixture
async def pods() -> AsyncIterator[dict[str, Runtime]]:
    """Real diag servers, one per pod of green, named like the pods."""
    started: dict[str, Runtime] = {}
    for pod in ("diag-green-a", "diag-green-b"):
        settings = Settings(
            discovery="memory", instance_id=pod, propagation_seconds=0, drain_grace_seconds=1
        )
        runtime = Runtime(DIAG, settings, MemoryRegistry())
        await runtime.start()
        started[pod] = runtime
    yield started
    for runtime in started.values():
        await runtime.stop()


def values(**extra: Any) -> dict[str, Any]:
    found = release_values(tags=BOTH, preview=2, services=SERVICES)
    found["ports"] = {"grpc": GRPC, "metrics": METRICS}
    found["rollout"] = {"analysis": ANALYSIS}
    return found | extra


def previewed(
    tools: FakeTools,
    pods: dict[str, Runtime],
    more_deployments: list[dict[str, Any]] = (),  # type: ignore[assignment]
    **extra: Any,
) -> None:
    tools.release(
        values(**extra),
        colour_deployments("blue", {"diag": 2}, OLD_TAG)
        + colour_deployments("green", {"diag": 2}, NEW_TAG)
        + list(more_deployments),
        history(DEPLOYED),
    )
    behind(tools, "diag-preview", pods)


def behind(tools: FakeTools, service: str, pods: dict[str, Runtime]) -> None:
    """The Service's EndpointSlice lists `pods`, ready; each pod's ports lead to its server."""
    slice_ = endpoint_slice(
        f"{service}-x7k2p",
        service,
        [endpoint(f"10.1.0.{n}", pod) for n, pod in enumerate(pods, start=1)],
        ports={"grpc": GRPC, "metrics": METRICS},
    )
    tools.answer(
        "kubectl",
        ["get", "endpointslices", f"kubernetes.io/service-name={service}"],
        {"kind": "List", "items": [slice_]},
    )
    for pod, runtime in pods.items():
        forward(tools, pod, GRPC, runtime.port)
        forward(tools, pod, METRICS, runtime.metrics_port)
    tools.answer(
        "kubectl",
        ["get", "pods"],
        {"kind": "List", "items": [running_pod(pod) for pod in pods]},
    )


def running_pod(name: str, restarts: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": restarts}],
        },
    }


def forward(tools: FakeTools, pod: str, remote: int, local: int) -> None:
    tools.answer(
        "kubectl",
        ["port-forward", f"pod/{pod}", f":{remote}"],
        f"Forwarding from 127.0.0.1:{local} -> {remote}\n",
        hang=True,
    )


def rollout(*argv: str, runner: Runner | None = None) -> int:
    root = argparse.ArgumentParser(prog="blueprint")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["rollout", "--namespace", NS, *argv])
    code: int = commands.run(args, runner=runner)
    return code


def forwarded_pods(tools: FakeTools) -> list[str]:
    return [c[2] for c in tools.calls() if c[1] == "port-forward"]


# -- every pod, through the preview Service's EndpointSlice ----------------------------------


async def test_verify_probes_every_ready_pod_behind_the_preview(
    tools: FakeTools, pods: dict[str, Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, pods)
    assert await asyncio.to_thread(rollout, "verify") == 0, capsys.readouterr()
    assert sorted(forwarded_pods(tools)) == ["pod/diag-green-a", "pod/diag-green-b"]
    out = capsys.readouterr().out
    assert "diag: ok (2 pods)" in out


async def test_one_unhealthy_pod_fails_verify_and_is_named(
    tools: FakeTools, pods: dict[str, Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, pods)
    await pods["diag-green-b"].health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await asyncio.to_thread(rollout, "verify") == 1
    assert "diag-green-b: health is NOT_SERVING" in capsys.readouterr().out


async def test_a_pod_missing_from_the_endpoints_fails_verify(
    tools: FakeTools, pods: dict[str, Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, {"diag-green-a": pods["diag-green-a"]})  # 2 replicas, 1 ready endpoint
    assert await asyncio.to_thread(rollout, "verify") == 1
    assert "1 of 2 pods are ready endpoints of diag-preview" in capsys.readouterr().out


def test_every_service_declares_a_read_only_smoke_call() -> None:
    for name in catalog.SERVICES:
        smoke = catalog.smoke_call(name)
        service, _, method = smoke.method.strip("/").partition("/")
        assert service in catalog.spec(name).grpc_services, name
        assert method, name


# -- workers run on the preview colour, paused, and are verified -----------------------------


async def test_preview_workers_are_running_and_healthy(
    tools: FakeTools, pods: dict[str, Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    worker = {"diag-green-a": pods["diag-green-a"]}  # a health server stands in for it
    previewed(
        tools,
        pods,
        workers={"clicks": {"replicas": 1}},
        more_deployments=[
            deployment("clicks-worker-blue", 1, tag=OLD_TAG),
            deployment("clicks-worker-green", 1, tag=NEW_TAG),
        ],
    )
    tools.answer(
        "kubectl",
        ["get", "pods", "app.kubernetes.io/name=clicks-worker"],
        {"kind": "List", "items": [running_pod(p) for p in worker]},
        first=True,
    )
    assert await asyncio.to_thread(rollout, "verify") == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "clicks-worker: ok (1 pod, paused until live)" in out


def test_a_preview_without_its_workers_is_not_verified(
    tools: FakeTools, capsys: pytest.CaptureFixture[str]
) -> None:
    tools.release(
        values(workers={"clicks": {"replicas": 1}}),
        colour_deployments("blue", {"diag": 2, "clicks-worker": 1}, OLD_TAG)
        + colour_deployments("green", {"diag": 2}, NEW_TAG)
        + [deployment("clicks-worker-green", 0, tag=NEW_TAG)],
        history(DEPLOYED),
    )
    tools.answer("kubectl", ["get", "endpointslices"], {"kind": "List", "items": []})
    tools.answer("kubectl", ["get", "pods"], {"kind": "List", "items": []})
    assert rollout("verify") == 1
    assert "clicks-worker-green is scaled to 0" in capsys.readouterr().out


# -- after the switch: the new live colour's own metrics decide ------------------------------


def promoted_release(tools: FakeTools, pods: dict[str, Runtime]) -> None:
    """What helm and the cluster say once promote's upgrade took effect."""
    tools.rules.clear()
    tools.release(
        values(activeColor="green"),
        colour_deployments("blue", {"diag": 2}, OLD_TAG)
        + colour_deployments("green", {"diag": 2}, NEW_TAG),
        history(DEPLOYED, PROMOTED),
    )
    behind(tools, "diag", pods)


def traffic(tools: FakeTools, pods: dict[str, Runtime], *, failing: int, ok: int) -> Any:
    """The analysis window: clients call the new colour, then helm shows it promoted."""

    def during_window(seconds: float) -> None:
        if seconds != ANALYSIS["windowSeconds"]:
            return  # the settle pause of a rollback
        for runtime in pods.values():
            with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
                stub = diag_pb2_grpc.DiagnosticsStub(channel)
                for _ in range(ok):
                    stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)
                for _ in range(failing):
                    with pytest.raises(grpc.RpcError):
                        stub.Fail(diag_pb2.FailRequest(code=13, message="boom"), timeout=5)
        promoted_release(tools, pods)

    return during_window


def runner(tools: FakeTools, window: Any) -> Runner:
    return Runner(Tools(namespace=NS), say=print, sleep=window)


async def test_a_failing_promotion_is_rolled_back_by_its_analysis(
    tools: FakeTools, pods: dict[str, Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, pods)
    behind(tools, "diag", pods)  # once green is live, the live Service selects these pods
    window = traffic(tools, pods, failing=10, ok=10)
    code = await asyncio.to_thread(rollout, "promote", runner=runner(tools, window))
    assert code == 1
    switch, back, drop = tools.upgrades()
    assert set_flags(switch)[0] == ("--set-string", "activeColor=green")
    assert set_flags(back) == [("--set-string", "activeColor=blue")]
    assert set_flags(drop) == [("--set", "previewReplicas=0")]
    err = capsys.readouterr()
    assert "diag: error ratio 0.500 over 40 calls > 0.05" in err.out + err.err
    assert "rolled back" in err.err


async def test_a_healthy_promotion_passes_its_analysis(
    tools: FakeTools, pods: dict[str, Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    previewed(tools, pods)
    behind(tools, "diag", pods)
    window = traffic(tools, pods, failing=0, ok=20)
    code = await asyncio.to_thread(rollout, "promote", runner=runner(tools, window))
    assert code == 0, capsys.readouterr()
    [switch] = tools.upgrades()
    assert "--no-hooks" in switch
    assert "diag: 40 calls, error ratio 0.000" in capsys.readouterr().out
