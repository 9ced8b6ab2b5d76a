"""Replicas dying under load, as real processes killed with real signals.

The promise: a replica killed with SIGKILL costs callers no failed idempotent
call (each is retried once on another endpoint) and leaves discovery within
the lease TTL plus one second; a replica sent SIGTERM drains with zero failed
calls and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.settings import Settings
from support.load import closed_loop
from support.mesh import mesh_env, running, start_server, stop

LEASE_TTL = 2.0


@pytest.fixture
async def mesh_client(redis_url: str, redis_prefix: str) -> AsyncIterator[MeshClient]:
    settings = Settings(
        discovery="redis",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        lease_ttl_seconds=LEASE_TTL,
        resync_seconds=0.25,
        balancer="round_robin",
    )
    registry = RedisRegistry.from_url(
        redis_url, prefix=redis_prefix, lease_ttl_seconds=LEASE_TTL, resync_seconds=0.25
    )
    client = MeshClient(settings, registry)
    yield client
    await client.close()
    await registry.close()


async def _known_ids(client: MeshClient) -> set[str]:
    return {e.instance_id for e in client.router("diag").pool.endpoints}


async def _wait_until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_sigkill_under_load_fails_no_call_and_leaves_discovery_within_ttl(
    mesh_client: MeshClient, redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    env = mesh_env(redis_url, redis_prefix, BLUEPRINT_LEASE_TTL_SECONDS=str(LEASE_TTL))
    with running("diag", 3, env, log_dir) as servers:
        stub = mesh_client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        await _wait_until(lambda: _has(mesh_client, 3), timeout=5)

        async def echo() -> str:
            reply = await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)
            return reply.instance_id

        stop = asyncio.Event()
        load = asyncio.create_task(closed_loop(echo, stop, concurrency=16))
        await asyncio.sleep(1.0)
        victim = servers[0]
        victim.process.send_signal(signal.SIGKILL)
        gone_after = await _wait_until(
            lambda: _lacks(mesh_client, victim.instance_id), timeout=LEASE_TTL + 3
        )
        await asyncio.sleep(0.5)
        stop.set()
        result = await load

    assert victim.process.returncode == -signal.SIGKILL
    assert result.failures == [], [f.code() for f in result.failures[:5]]
    assert gone_after <= LEASE_TTL + 1.0, f"still discovered {gone_after:.2f}s after SIGKILL"
    assert result.served_by[victim.instance_id] > 0, "the victim served nothing before dying"
    survivors = [s.instance_id for s in servers[1:]]
    assert all(result.served_by[s] > 0 for s in survivors), result.served_by


async def test_sigterm_under_load_fails_no_call_and_exits_cleanly(
    mesh_client: MeshClient, redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    env = mesh_env(redis_url, redis_prefix)
    with running("diag", 3, env, log_dir) as servers:
        stub = mesh_client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        await _wait_until(lambda: _has(mesh_client, 3), timeout=5)

        async def slow_work() -> str:
            # Calls that are in flight when SIGTERM lands must finish, not fail.
            request = diag_pb2.WorkRequest()
            request.duration.FromMilliseconds(50)
            reply = await stub.Work(request, timeout=5)
            return reply.instance_id

        stop = asyncio.Event()
        load = asyncio.create_task(closed_loop(slow_work, stop, concurrency=24))
        await asyncio.sleep(1.0)
        victim = servers[1]
        victim.process.send_signal(signal.SIGTERM)
        # Deregistration is immediate: clients learn well before any lease lapses.
        gone_after = await _wait_until(
            lambda: _lacks(mesh_client, victim.instance_id), timeout=LEASE_TTL
        )
        exit_code = await asyncio.to_thread(victim.process.wait, 15)
        await asyncio.sleep(0.5)
        stop.set()
        result = await load

    assert exit_code == 0, victim.log()
    assert result.failures == [], [f.code() for f in result.failures[:5]]
    assert gone_after < LEASE_TTL
    assert result.served_by[victim.instance_id] > 0
    log = victim.log()
    assert '"message": "draining"' in log and '"message": "stopped"' in log


async def test_new_instance_is_picked_up_within_ttl(
    mesh_client: MeshClient, redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    env = mesh_env(redis_url, redis_prefix)
    with running("diag", 1, env, log_dir):
        await _wait_until(lambda: _has(mesh_client, 1), timeout=5)
        newcomer = await asyncio.to_thread(start_server, "diag", "diag-new", env, log_dir)
        try:
            seen_after = await _wait_until(
                lambda: _contains(mesh_client, "diag-new"), timeout=LEASE_TTL + 1
            )
            stub = mesh_client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
            served = {
                (await stub.Echo(diag_pb2.EchoRequest(payload="?"))).instance_id for _ in range(6)
            }
        finally:
            stop([newcomer])
    assert seen_after <= LEASE_TTL + 1.0
    assert served == {"diag-1", "diag-new"}


async def _has(client: MeshClient, count: int) -> bool:
    return len(await _known_ids(client)) >= count


async def _lacks(client: MeshClient, instance_id: str) -> bool:
    return instance_id not in await _known_ids(client)


async def _contains(client: MeshClient, instance_id: str) -> bool:
    return instance_id in await _known_ids(client)
