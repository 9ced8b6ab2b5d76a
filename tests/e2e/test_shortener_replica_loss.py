"""A shortener replica killed with SIGKILL under Shorten load from mesh callers: no
caller sees an error, and no link is stored twice.

Three `blueprint serve shortener` processes on the machine's PostgreSQL, found through
Redis discovery; 16 mesh callers each shorten URLs of their own in a loop. The mesh
gives every Shorten an idempotency key and retries it elsewhere when the victim dies
under it: a call the victim had not started runs fresh on a survivor; one it had
claimed is answered ABORTED (its lease still runs) and retried after the lease, then
resumes with the victim's pinned code; one it had finished is replayed.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry

from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.mesh import mesh_env, running
from support.postgres import postgres_or_skip
from support.scrape import sample_sum
from support.waiting import eventually

pytestmark = pytest.mark.redis

# Below what the two survivors admit at once at their floor (2 x admission_min_limit 8):
# a loaded machine drives each replica's limit to that floor, and 16 callers then sat
# exactly at it, so a retried burst after the kill could be shed three times over
# (RESOURCE_EXHAUSTED, seen once in CI; not reproduced in six runs here, three of them
# beside stress-ng). What is measured here is the kill, not
# overload; tests/e2e/test_overload.py measures shedding.
CALLERS = 12
REPLICAS = 3
SHORTEN = "blueprint.shortener.v1.Shortener/Shorten"


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_or_skip().databases("shortener_sigkill") as (url,):
        yield url


@pytest.fixture
def env(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    """The replicas' environment, with the schema migrated by `blueprint migrate`."""
    env = mesh_env(
        redis_url,
        redis_prefix,
        BLUEPRINT_STATE_DIR=str(tmp_path / "state"),
        BLUEPRINT_DATABASE_URL=database_url,
        BLUEPRINT_SHORTENER_PURGE_INTERVAL_SECONDS="0",
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "blueprint.cli", "migrate", "shortener"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    return env


@pytest.mark.timeout(300)  # three replicas to start: slow on a loaded machine
async def test_sigkill_under_shorten_load_costs_no_error_and_no_duplicate(
    env: dict[str, str], database_url: str, redis_url: str, redis_prefix: str, log_dir: Path
) -> None:

    metrics = Metrics(CollectorRegistry())
    registry = RedisRegistry.from_url(
        redis_url, prefix=redis_prefix, lease_ttl_seconds=2, resync_seconds=0.25
    )
    client = MeshClient(
        Settings(redis_url=redis_url, redis_prefix=redis_prefix, balancer="round_robin"),
        registry,
        metrics=metrics,
    )
    answered: dict[str, str] = {}  # url -> code
    failures: list[grpc.aio.AioRpcError] = []
    try:
        with running("shortener", REPLICAS, env, log_dir, start_timeout=60) as servers:
            router = client.router("shortener")
            await eventually(
                lambda: len(router.pool.endpoints) == REPLICAS, 10, "every replica discovered"
            )
            stub = client.stub("shortener", ShortenerStub)
            stop = asyncio.Event()

            async def caller(number: int) -> None:
                sent = 0
                while not stop.is_set():
                    url = f"https://example.com/{number}/{sent}"
                    sent += 1
                    try:
                        reply = await stub.Shorten(pb.ShortenRequest(url=url), timeout=10)
                        answered[url] = reply.link.code
                    except grpc.aio.AioRpcError as error:
                        failures.append(error)

            load = asyncio.gather(*(caller(n) for n in range(CALLERS)))
            victim = servers[0]
            await eventually(lambda: len(answered) >= 200, 30, "the load under way")
            served_by_victim = sample_sum(
                victim.metrics_port,
                "rpc_server_call_duration_seconds_count",
                {"rpc_method": SHORTEN},
            )
            victim.process.send_signal(signal.SIGKILL)
            killed_at = len(answered)
            # Past the victim's idempotency leases (2 s), so its claims are resumed under load.
            await eventually(lambda: len(answered) >= killed_at + 100, 30, "load after the kill")
            await asyncio.sleep(2.5)
            stop.set()
            await load
            assert victim.process.wait(timeout=5) == -signal.SIGKILL
    finally:
        await client.close()
        await registry.close()

    assert failures == [], [(f.code(), f.details()) for f in failures[:5]]
    assert served_by_victim > 0, "the victim served no Shorten before it was killed"
    retried = {
        reason: metrics.registry.get_sample_value(
            "blueprint_mesh_retries_total", {"target": "shortener", "reason": reason}
        )
        for reason in ("UNAVAILABLE", "ABORTED")
    }
    print(f"calls answered {len(answered)}, retries after the kill {retried}")
    assert retried["UNAVAILABLE"], "no call was cut by the kill: the test proved nothing"

    connection = await asyncpg.connect(database_url)
    try:
        per_url = dict(await connection.fetch("SELECT url, count(*) FROM links GROUP BY url"))
        duplicate_keys = await connection.fetchval(
            "SELECT count(*) FROM (SELECT idempotency_key FROM links "
            "GROUP BY idempotency_key HAVING count(*) > 1) AS twice"
        )
        unkeyed = await connection.fetchval(
            "SELECT count(*) FROM links WHERE idempotency_key IS NULL"
        )
        codes = dict(await connection.fetch("SELECT url, code FROM links"))
    finally:
        await connection.close()
    assert set(per_url) == set(answered)  # every link stored is one a caller was answered
    assert all(count == 1 for count in per_url.values()), "a URL was stored twice"
    assert duplicate_keys == 0 and unkeyed == 0
    assert codes == answered  # and each caller got the code that was stored
