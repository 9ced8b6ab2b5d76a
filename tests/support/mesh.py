"""Real `blueprint serve` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blueprint.local.processes import StartFailed, ready_env, wait_ready


@dataclass
class ServerProcess:
    instance_id: str
    port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def mesh_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    env.update(
        BLUEPRINT_DISCOVERY="redis",
        BLUEPRINT_REDIS_URL=redis_url,
        BLUEPRINT_REDIS_PREFIX=prefix,
        BLUEPRINT_LEASE_TTL_SECONDS="2",
        BLUEPRINT_RESYNC_SECONDS="0.25",
        BLUEPRINT_PROPAGATION_SECONDS="0.5",
        BLUEPRINT_DRAIN_GRACE_SECONDS="5",
    )
    env.update(extra)
    return env


def wait_serving(address: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not become SERVING in {timeout}s")
            time.sleep(0.05)


def start_server(
    service: str,
    instance_id: str,
    env: Mapping[str, str],
    log_dir: Path,
    start_timeout: float = 30.0,
) -> ServerProcess:
    """`blueprint serve SERVICE`, once it has bound its own ports and reported them."""
    log_path = log_dir / f"{instance_id}.log"
    ready_file = log_dir / f"{instance_id}.ready.json"
    ready_file.unlink(missing_ok=True)
    child_env = {**env, **ready_env(ready_file), "BLUEPRINT_INSTANCE_ID": instance_id}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "blueprint.cli", "serve", service],
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        bound = wait_ready(process, ready_file, log_path, timeout=start_timeout)
    except StartFailed as failed:
        process.kill()
        process.wait()
        log_text = log_path.read_text(errors="replace")
        raise AssertionError(f"{instance_id} did not start ({failed}):\n{log_text}") from None
    return ServerProcess(instance_id, bound.port, bound.metrics_port, process, log_path)


def stop(servers: Iterable[ServerProcess], timeout: float = 15.0) -> None:
    """SIGTERM every server, then SIGKILL whatever has not exited in time: no test leaks one."""
    servers = list(servers)
    for server in servers:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def running(
    service: str, count: int, env: Mapping[str, str], log_dir: Path, start_timeout: float = 15.0
) -> Iterator[list[ServerProcess]]:
    """`count` replicas, each given `start_timeout` to serve (a loaded machine starts slowly)."""
    servers = [
        start_server(service, f"{service}-{n}", env, log_dir, start_timeout)
        for n in range(1, count + 1)
    ]
    try:
        yield servers
    finally:
        stop(servers)
