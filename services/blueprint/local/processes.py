"""Child processes that die with their parent, report where they listen, and stop gracefully.

A Blueprint process is started with BLUEPRINT_PORT=0 and BLUEPRINT_METRICS_PORT=0 (it
binds free ports itself) and BLUEPRINT_READY_FILE; `ready` / `wait_ready` read back what
it bound (`blueprint.mesh.ready`). `blueprint up`, the tests and the benchmarks all start
processes this way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from blueprint.mesh.ready import Bound
from blueprint.mesh.ready import read as read_ready

# Linux: the kernel sends SIGTERM to a child whose parent died, so no replica outlives
# `blueprint up` or a test run. setpriv (util-linux) sets that between fork and exec: a
# preexec_fn would run Python in a child forked from a threaded process (grpc's
# threads), which crashed it now and then (SIGSEGV in the child, under load).
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def _dying_with_parent(argv: Sequence[str]) -> list[str]:
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


class StartFailed(Exception):
    """A process exited, or never reported ready, during its start; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for programs that cannot bind port 0 and report it (redis-server,
    Prometheus); racy: another process may take it before the program binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            _dying_with_parent(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signals, our order: not the terminal's Ctrl-C
        )


def stop_all(children: Sequence[subprocess.Popen[bytes]], grace_seconds: float) -> list[int]:
    """SIGTERM every child, wait up to the grace, SIGKILL the rest; returns the pids killed."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
    killed = []
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()
            killed.append(child.pid)
    return killed


def ready_env(ready_file: Path) -> dict[str, str]:
    """The settings that make a Blueprint process bind free ports and report them."""
    return {
        "BLUEPRINT_PORT": "0",
        "BLUEPRINT_METRICS_PORT": "0",
        "BLUEPRINT_READY_FILE": str(ready_file),
    }


def ready(process: subprocess.Popen[bytes], ready_file: Path) -> Bound | None:
    """What `process` bound, once it has reported; None while it is still starting."""
    bound = read_ready(ready_file)
    return bound if bound is not None and bound.pid == process.pid else None


def last_line(log_path: Path, limit: int = 300) -> str:
    """The last non-blank line of a log: for a crash, the exception and its message."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16_384))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    text = next((line.strip() for line in reversed(lines) if line.strip()), "(empty log)")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def wait_ready(
    process: subprocess.Popen[bytes], ready_file: Path, log_path: Path, timeout: float
) -> Bound:
    """Block until `process` reports ready; StartFailed (and the process killed) if it
    exits first or takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while (bound := ready(process, ready_file)) is None:
        if process.poll() is not None:
            raise StartFailed(f"exited with code {process.returncode}: {last_line(log_path)}")
        if time.monotonic() > deadline:
            stop_all([process], grace_seconds=5.0)
            raise StartFailed(f"not ready within {timeout:g} s: {last_line(log_path)}")
        time.sleep(0.02)
    return bound
