"""A shortener replica cut from its database stops serving, and clients stop calling it.

Two `blueprint serve shortener` processes on the machine's PostgreSQL, found through
Redis discovery. One reaches the database through a loopback TCP proxy the test cuts:
its dependency checker turns its health NOT_SERVING (overall, per name; liveness stays
SERVING), it marks itself not serving in discovery, and a mesh client sends every call
to the other replica, with no error. The proxy restored, it serves again and gets calls.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.health import LIVENESS
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.mesh import ServerProcess, mesh_env, start_server, stop
from support.postgres import postgres_or_skip
from support.tcp_proxy import TcpProxy
from support.waiting import eventually

pytestmark = pytest.mark.redis

WITHIN = 60.0  # generous bounds: a loaded machine
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_or_skip().databases("shortener_health") as (url,):
        yield url


@pytest.fixture
def env(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = mesh_env(
        redis_url,
        redis_prefix,
        BLUEPRINT_STATE_DIR=str(tmp_path / "state"),
        BLUEPRINT_DATABASE_URL=database_url,
        BLUEPRINT_SHORTENER_PURGE_INTERVAL_SECONDS="0",
        BLUEPRINT_HEALTH_CHECK_INTERVAL_SECONDS="0.2",
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "blueprint.cli", "migrate", "shortener"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    return env


async def _health(server: ServerProcess, name: str) -> int:
    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return int(reply.status)


@pytest.mark.timeout(300)
async def test_a_replica_cut_from_its_database_leaves_the_mesh_and_comes_back(
    env: dict[str, str], database_url: str, redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    upstream = urlsplit(database_url)
    metrics = Metrics(CollectorRegistry())
    registry = RedisRegistry.from_url(
        redis_url, prefix=redis_prefix, lease_ttl_seconds=2, resync_seconds=0.25
    )
    client = MeshClient(
        Settings(redis_url=redis_url, redis_prefix=redis_prefix, balancer="round_robin"),
        registry,
        metrics=metrics,
    )
    servers: list[ServerProcess] = []
    async with TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432) as proxy:
        proxied = database_url.replace(f":{upstream.port}/", f":{proxy.port}/", 1)
        try:
            # In threads: the proxy runs on this loop, and the cut replica's start needs it.
            for instance_id, url in (
                ("shortener-cut", proxied),
                ("shortener-direct", database_url),
            ):
                servers.append(
                    await asyncio.to_thread(
                        start_server,
                        "shortener",
                        instance_id,
                        {**env, "BLUEPRINT_DATABASE_URL": url},
                        log_dir,
                        60,
                    )
                )
            cut = servers[0]
            pool = client.router("shortener").pool
            stub = client.stub("shortener", ShortenerStub)
            code = (await stub.Shorten(pb.ShortenRequest(url="https://example.com/h"))).link.code

            def picks(instance_id: str) -> float:
                value = metrics.registry.get_sample_value(
                    "blueprint_mesh_picks_total",
                    {"target": "shortener", "endpoint": instance_id, "balancer": "round_robin"},
                )
                return value or 0.0

            async def resolve(calls: int) -> None:
                for _ in range(calls):
                    await stub.GetLink(pb.GetLinkRequest(code=code), timeout=10)

            def serving() -> set[str]:
                return {e.instance_id for e in pool.endpoints if pool.serving(e)}

            await eventually(lambda: serving() == {"shortener-cut", "shortener-direct"}, WITHIN)
            await resolve(20)
            assert picks("shortener-cut") > 0

            proxy.cut()
            await eventually(lambda: serving() == {"shortener-direct"}, WITHIN, "cut replica out")
            assert await _health(cut, "") == NOT_SERVING
            assert await _health(cut, "shortener") == NOT_SERVING
            assert await _health(cut, LIVENESS) == SERVING  # a restart brings no database back
            listed = {i.instance_id: i.serving for i in await registry.instances("shortener")}
            assert listed == {"shortener-cut": False, "shortener-direct": True}
            before = picks("shortener-cut")
            await resolve(40)  # none fails, none goes to the cut replica
            assert picks("shortener-cut") == before

            proxy.restore()
            await eventually(lambda: len(serving()) == 2, WITHIN, "cut replica back")
            assert await _health(cut, "") == SERVING
            await resolve(20)
            assert picks("shortener-cut") > before
        finally:
            await client.close()
            await registry.close()
            await asyncio.to_thread(stop, servers)
