"""The shortener as it runs: `blueprint migrate shortener`, two `blueprint serve shortener`
replicas and a `blueprint work shortener-clicks` consumer, found through Redis discovery.

The database is the local default, one SQLite file under the state directory that the
three processes share, as under `blueprint up`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from blueprint.local.processes import ready_env, wait_ready
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.settings import Settings
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.mesh import ServerProcess, mesh_env, running

pytestmark = pytest.mark.redis

BLUEPRINT = [sys.executable, "-m", "blueprint.cli"]


@pytest.fixture
def env(redis_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    return mesh_env(
        redis_url,
        redis_prefix,
        BLUEPRINT_STATE_DIR=str(tmp_path / "state"),
        BLUEPRINT_QUEUE_BLOCK_SECONDS="0.2",
    )


@pytest.fixture
def servers(env: dict[str, str], log_dir: Path) -> Iterator[list[ServerProcess]]:
    migrated = subprocess.run(
        [*BLUEPRINT, "migrate", "shortener"], env=env, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stderr
    with running("shortener", 2, env, log_dir) as started:
        yield started


@pytest.fixture
def worker(env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = log_dir / "shortener-clicks.log"
    ready_file = log_dir / "shortener-clicks.ready.json"
    worker_env = {**env, **ready_env(ready_file)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*BLUEPRINT, "work", "shortener-clicks"], env=worker_env, stdout=log, stderr=log
        )
    try:
        wait_ready(process, ready_file, log_path, timeout=20)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def stub(
    servers: list[ServerProcess], redis_url: str, redis_prefix: str
) -> AsyncIterator[ShortenerStub]:
    settings = Settings(redis_url=redis_url, redis_prefix=redis_prefix, balancer="round_robin")
    registry = RedisRegistry.from_url(
        redis_url, prefix=redis_prefix, lease_ttl_seconds=2, resync_seconds=0.25
    )
    client = MeshClient(settings, registry)
    assert await client.wait_for_endpoints("shortener", 10)
    yield client.stub("shortener", ShortenerStub)
    await client.close()
    await registry.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)


async def test_shorten_resolve_and_the_clicks_show_in_the_stats(
    stub: ShortenerStub, worker: subprocess.Popen[bytes]
) -> None:
    created = await stub.Shorten(pb.ShortenRequest(url="https://example.com/a"))
    code = created.link.code
    assert created.link.url == "https://example.com/a" and created.management_token

    # Round robin: the calls alternate between the two replicas.
    for _ in range(4):
        assert (await stub.Resolve(pb.ResolveRequest(code=code))).url == "https://example.com/a"

    async def four_clicks_counted() -> bool:
        stats = await stub.GetStats(pb.GetStatsRequest(code=code))
        return stats.total_clicks == 4

    await eventually(four_clicks_counted, 15, "GetStats showing the 4 clicks")
    stats = await stub.GetStats(pb.GetStatsRequest(code=code))
    assert [d.clicks for d in stats.daily] == [4]


async def test_a_deleted_link_is_gone_from_every_replica(
    stub: ShortenerStub, servers: list[ServerProcess]
) -> None:
    url = "https://example.com/b"
    created = await stub.Shorten(pb.ShortenRequest(url=url, custom_alias="gone"))
    for _ in range(2):  # both replicas now hold it in their near caches
        assert (await stub.Resolve(pb.ResolveRequest(code="gone"))).url == url
    await stub.DeleteLink(
        pb.DeleteLinkRequest(code="gone", management_token=created.management_token)
    )

    async def not_found_on_both() -> bool:
        answers = []
        for _ in range(2):
            try:
                await stub.Resolve(pb.ResolveRequest(code="gone"))
                answers.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                answers.append(error.code())
        return answers == [grpc.StatusCode.NOT_FOUND] * 2

    # Another replica's near cache may answer for its TTL (1 s), no longer.
    await eventually(not_found_on_both, 5, "both replicas answering NOT_FOUND")
    for server in servers:
        assert server.process.poll() is None, server.log()
