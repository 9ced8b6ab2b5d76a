"""`blueprint up` as a newcomer runs it: embedded Redis, replicas, calls, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _children(pid: int) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes: it only waits to be reaped.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


def _wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = path.read_text() if path.exists() else ""
        if text in output:
            return output
        if process.poll() is not None:
            raise AssertionError(f"blueprint up exited early:\n{output}")
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not printed within {timeout}s:\n{path.read_text()}")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    clean.update(BLUEPRINT_STATE_DIR=str(tmp_path / "state"), BLUEPRINT_REPLICAS="3")
    return clean


def _blueprint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blueprint.cli", *args],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_up_runs_the_mesh_balances_calls_restarts_replicas_and_stops_cleanly(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "up.out"
    with open(out, "wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "blueprint.cli", "up"], env=env, stdout=sink, stderr=sink
        )
    try:
        table = _wait_for_text(out, "Ctrl-C stops everything", up, timeout=60)
        rows = [line.split() for line in table.splitlines()]
        diag_rows = [row for row in rows if row[:1] == ["diag"]]
        assert len(diag_rows) == 3 and all("SERVING" in row for row in diag_rows), table
        assert any(row[:2] == ["shortener-clicks", "(worker)"] for row in rows), table
        assert "embedded redis-server" in table

        served = set()
        for _ in range(9):
            result = _blueprint(env, "call", "diag", "Echo", '{"payload": "hi"}')
            assert result.returncode == 0, result.stderr
            reply = json.loads(result.stdout)
            assert reply["payload"] == "hi"
            served.add(reply["instanceId"])
        assert len(served) >= 2, served  # new client each time, yet not always the same replica

        status = _blueprint(env, "status")
        assert status.returncode == 0
        assert all(f"diag-{n}" in status.stdout for n in (1, 2, 3)), status.stdout

        replicas = [p for p in _children(up.pid) if _argv(p)[-2:] == ["serve", "diag"]]
        assert len(replicas) == 3
        os.kill(replicas[0], signal.SIGKILL)
        _wait_for_text(out, "restarting", up, timeout=10)

        before_stop = _children(up.pid)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    output = out.read_text()
    assert "stopped." in output
    assert "killed replicas" not in output, output
    assert not [pid for pid in before_stop if _alive(pid)], "processes outlived blueprint up"
    assert not (tmp_path / "state" / "up.json").exists()
