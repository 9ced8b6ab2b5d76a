"""`blueprint up` as a newcomer runs it: embedded Redis, replicas, calls, a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc


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


def _table_rows(table: str) -> list[dict[str, str]]:
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("SERVICE"))
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)))
    return rows


def _health(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_up_starts_every_time_and_shows_the_ports_each_replica_bound(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Ports in the user's environment must not leak into replicas: each binds its own.
    env.update(BLUEPRINT_REPLICAS="1", BLUEPRINT_PORT="1", BLUEPRINT_METRICS_PORT="1")
    for attempt in (1, 2):
        out = tmp_path / f"up-{attempt}.out"
        with open(out, "wb") as sink:
            up = subprocess.Popen(
                [sys.executable, "-m", "blueprint.cli", "up"], env=env, stdout=sink, stderr=sink
            )
        try:
            rows = _table_rows(_wait_for_text(out, "Ctrl-C stops everything", up, timeout=60))
            assert {row["SERVICE"] for row in rows} >= {"diag", "shortener"}, rows
            for row in rows:
                assert _health(row["ADDRESS"]) == "SERVING", row
                with urllib.request.urlopen(row["METRICS"], timeout=5) as scraped:
                    assert b"process_cpu_seconds_total" in scraped.read(), row
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=60) == 0
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
        assert "Traceback" not in out.read_text()


def test_a_replica_that_keeps_failing_at_start_ends_up_with_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    # One worker whose handler does not exist: it exits at every start.
    env.update(
        BLUEPRINT_REPLICAS="1",
        BLUEPRINT_WORKER_HANDLERS='{"broken": "nosuch.module:SPEC"}',
        BLUEPRINT_RESTART_BACKOFF_SECONDS="0.1",
        BLUEPRINT_RESTART_ATTEMPTS="3",
    )
    up = subprocess.run(
        [sys.executable, "-m", "blueprint.cli", "up"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = up.stdout + up.stderr
    assert up.returncode == 1, output
    assert "Traceback" not in output
    log_path = tmp_path / "state" / "logs" / "broken-1.log"
    [verdict] = [line for line in output.splitlines() if "giving up" in line]
    assert verdict.startswith(
        "blueprint up: giving up on broken-1, failed 3 times in a row; last: exited"
    )
    assert "nosuch" in verdict and f"(log: {log_path})" in verdict
    assert output.count("broken-1 exited with code") == 2  # the two restarts before giving up
    assert "stopped." in output
    assert not (tmp_path / "state" / "up.json").exists()
