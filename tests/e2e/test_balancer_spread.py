"""Short-lived clients spread their calls: a fresh client is not tied to the first replica.

Each call here comes from a new client (a new MeshClient, or a new
`blueprint call` process), as from a CLI or a freshly started pod; with the
default balancer the first call must land on a random replica. With 3
replicas, all calls landing on one by chance has probability 3 x (1/3)^n:
about 2e-7 for 15 calls, 5e-5 for 10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.settings import Settings
from support.mesh import ServerProcess, mesh_env, running

pytestmark = pytest.mark.redis


@pytest.fixture
def env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return mesh_env(redis_url, redis_prefix)


@pytest.fixture
def replicas(env: dict[str, str], log_dir: Path) -> Iterator[list[ServerProcess]]:
    with running("diag", 3, env, log_dir, start_timeout=60.0) as started:
        yield started


async def _one_call_from_a_fresh_client(redis_url: str, redis_prefix: str) -> str:
    settings = Settings(redis_url=redis_url, redis_prefix=redis_prefix)
    assert settings.balancer == "p2c_expected_latency"  # the default, not chosen here
    registry = RedisRegistry.from_url(
        redis_url, prefix=redis_prefix, lease_ttl_seconds=3, resync_seconds=0.5
    )
    client = MeshClient(settings, registry)
    try:
        assert await client.wait_for_endpoints("diag", 30)
        stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        reply = await stub.Echo(diag_pb2.EchoRequest(payload="hi"), timeout=30)
        return reply.instance_id
    finally:
        await client.close()
        await registry.close()


async def test_fifteen_fresh_clients_reach_more_than_one_replica(
    replicas: list[ServerProcess], redis_url: str, redis_prefix: str
) -> None:
    served: Counter[str] = Counter()
    for _ in range(15):
        served[await _one_call_from_a_fresh_client(redis_url, redis_prefix)] += 1
    assert set(served) <= {server.instance_id for server in replicas}
    assert len(served) >= 2, served


def test_repeated_blueprint_calls_reach_more_than_one_replica(
    replicas: list[ServerProcess], env: dict[str, str]
) -> None:
    served: Counter[str] = Counter()
    for _ in range(10):
        result = subprocess.run(
            [sys.executable, "-m", "blueprint.cli", "call", "diag", "Echo", '{"payload": "hi"}'],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, result.stderr
        served[json.loads(result.stdout)["instanceId"]] += 1
    assert set(served) <= {server.instance_id for server in replicas}
    assert len(served) >= 2, served
