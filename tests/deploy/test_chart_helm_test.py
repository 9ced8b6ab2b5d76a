"""`helm test`: the hook pod, and its script run against a real `blueprint serve diag`.

No cluster exists here, so the script meets the server through static
discovery instead of EndpointSlices; everything after discovery (health of
every endpoint, diag Echo through the mesh client) is what runs in the cluster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from chart_render import CHART, FIXED_SECRETS, ROOT, of_kind, render

SCRIPT = CHART / "files" / "check_mesh.py"
BLUEPRINT = Path(sys.executable).parent / "blueprint"


def test_the_hook_checks_every_enabled_service() -> None:
    docs = render((CHART / "ci" / "everything-on-values.yaml",))
    pod = of_kind(docs, "Pod")["blueprint-test-mesh"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    script, *services = container["args"]
    assert script == SCRIPT.read_text()
    assert services == sorted(of_kind(docs, "HorizontalPodAutoscaler"))  # all 11, HPA on
    assert pod["metadata"]["labels"]["blueprint.io/mesh-client"] == "true"


def test_k8s_manifests_leave_out_the_hook_and_generated_secrets() -> None:
    text = (ROOT / "k8s" / "blueprint.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert {d["kind"] for d in docs}.isdisjoint({"Pod", "Secret"})
    assert {d["metadata"].get("namespace") for d in docs} == {"blueprint"}
    assert len(docs) == len([d for d in render((), FIXED_SECRETS) if d["kind"] != "Pod"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def diag_address(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "BLUEPRINT_DISCOVERY": "static",
        "BLUEPRINT_BIND_HOST": "127.0.0.1",
        "BLUEPRINT_ADVERTISE_HOST": "127.0.0.1",
        "BLUEPRINT_PORT": str(port),
        "BLUEPRINT_METRICS_PORT": "0",
        "BLUEPRINT_STATE_DIR": str(tmp_path),
        "BLUEPRINT_DRAIN_GRACE_SECONDS": "1",
        "BLUEPRINT_PROPAGATION_SECONDS": "0",
    }
    server = subprocess.Popen(
        [str(BLUEPRINT), "serve", "diag"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.poll() is None, "blueprint serve diag exited"
                assert time.monotonic() < deadline, "blueprint serve diag did not listen"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=15)


def run_script(endpoints: dict[str, list[str]], *services: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BLUEPRINT.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "BLUEPRINT_DISCOVERY": "static",
        "BLUEPRINT_STATIC_ENDPOINTS": json.dumps(endpoints),
        "BLUEPRINT_TEST_WAIT_SECONDS": "2",
    }
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.read_text(), *services],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_script_passes_when_every_endpoint_serves(diag_address: str) -> None:
    result = run_script({"diag": [diag_address]}, "diag")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{diag_address} SERVING" in " ".join(result.stdout.split())
    assert "helm-test" in result.stdout  # the Echo through the mesh
    assert "1 service(s) SERVING" in result.stdout


def test_the_script_fails_naming_what_is_missing_or_down(diag_address: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = run_script({"diag": [diag_address, dead]}, "diag", "shortener")
    assert result.returncode == 1
    assert f"FAIL diag: {dead} at {dead} is UNAVAILABLE" in result.stderr
    assert "FAIL shortener: no endpoints in discovery after 2s" in result.stderr
