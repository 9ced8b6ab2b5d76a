"""Load shedding on real `blueprint serve diag` processes over loopback.

- Overloaded (two replicas running CPU-bound Work, many more callers than they can
  serve, 1 s deadlines): the excess is answered RESOURCE_EXHAUSTED with RetryInfo,
  nothing is recorded UNKNOWN or INTERNAL, and both servers stay up and healthy.
- Moderately loaded (fewer calls at once than the limit's floor): nothing is shed.

Bounded by call counts and a generous time cap; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.admission import SENT_TIMEOUT_HEADER
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import StaticRegistry
from blueprint.mesh.resilience.retry import retry_info_delay, was_shed
from blueprint.mesh.settings import Settings
from support.mesh import ServerProcess, mesh_env, running
from support.scrape import sample_sum

WORK = "blueprint.diag.v1.Diagnostics/Work"
# What a call may be recorded as on an overloaded server: never UNKNOWN or INTERNAL.
EXPECTED_CODES = {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED"}


def _work(kind: int, milliseconds: int) -> diag_pb2.WorkRequest:
    request = diag_pb2.WorkRequest(kind=kind)
    request.duration.FromMilliseconds(milliseconds)
    return request


def _recorded_codes(servers: list[ServerProcess]) -> Counter[str]:
    codes: Counter[str] = Counter()
    for code in ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN",
                 "INTERNAL", "UNAVAILABLE"):  # fmt: skip
        labels = {"rpc_method": WORK, "rpc_response_status_code": code}
        for server in servers:
            codes[code] += int(
                sample_sum(server.metrics_port, "rpc_server_call_duration_seconds_count", labels)
            )
    return +codes


async def _serving(server: ServerProcess) -> bool:
    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_overloaded_pair_sheds_with_retry_info_and_stays_up(
    redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    # Floor 1: Work CPU holds the event loop, so one call at a time is all a replica can use.
    env = mesh_env(redis_url, redis_prefix, BLUEPRINT_ADMISSION_MIN_LIMIT="1")
    with running("diag", 2, env, log_dir, start_timeout=60) as servers:
        channels = [grpc.aio.insecure_channel(s.address) for s in servers]
        stubs = itertools.cycle([diag_pb2_grpc.DiagnosticsStub(c) for c in channels])
        request = _work(diag_pb2.WORK_KIND_CPU, 50)
        seen: Counter[str] = Counter()
        told: list[float] = []
        stop_at = time.monotonic() + 90  # a cap for a stalled machine, not a measurement
        # As the mesh client does: the timeout each call was sent with, so the server can
        # tell how long it waited unseen in grpc's queue (where most of the excess waits).
        sent = ((SENT_TIMEOUT_HEADER, "1000"),)

        async def caller() -> None:
            while seen["RESOURCE_EXHAUSTED"] < 20 and time.monotonic() < stop_at:
                try:
                    await next(stubs).Work(request, timeout=1.0, metadata=sent)
                    seen["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    seen[error.code().name] += 1
                    trailers = error.trailing_metadata()
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        delay = retry_info_delay(trailers)  # type: ignore[arg-type]
                        assert delay is not None and delay > 0, error
                        assert was_shed(trailers), error  # type: ignore[arg-type]
                        told.append(delay)

        try:
            await asyncio.gather(*(caller() for _ in range(80)))
        finally:
            for channel in channels:
                await channel.close()

        assert seen["RESOURCE_EXHAUSTED"] >= 20, seen
        assert set(seen) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, seen
        recorded = _recorded_codes(servers)
        assert set(recorded) <= EXPECTED_CODES, recorded
        shed = sum(
            sample_sum(s.metrics_port, "blueprint_admission_shed_total", {"rpc_method": WORK})
            for s in servers
        )
        assert shed >= 1
        for server in servers:
            assert server.process.poll() is None, server.log()
            assert await _serving(server)
            assert "Traceback" not in server.log()


async def test_moderate_load_is_never_shed(
    redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    # Defaults: the limit's floor is above what these callers put on a replica.
    env = mesh_env(redis_url, redis_prefix)
    with running("diag", 2, env, log_dir, start_timeout=60) as servers:
        endpoints = {"diag": [s.address for s in servers]}
        client = MeshClient(
            Settings(discovery="static", static_endpoints=endpoints, balancer="round_robin"),
            StaticRegistry(endpoints),
        )
        failures: list[grpc.aio.AioRpcError] = []
        calls = 0
        try:
            stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
            await client.wait_for_endpoints("diag", 30)
            requests = [_work(diag_pb2.WORK_KIND_CPU, 5), _work(diag_pb2.WORK_KIND_SLEEP, 20)]

            async def caller(request: diag_pb2.WorkRequest) -> None:
                nonlocal calls
                for _ in range(40):
                    try:
                        await stub.Work(request, timeout=30)
                    except grpc.aio.AioRpcError as error:
                        failures.append(error)
                    calls += 1

            await asyncio.gather(*(caller(requests[n % 2]) for n in range(12)))
        finally:
            await client.close()

        assert calls == 480 and not failures, [f.code() for f in failures]
        recorded = _recorded_codes(servers)
        assert set(recorded) == {"OK"}, recorded
        for server in servers:
            assert sample_sum(server.metrics_port, "blueprint_admission_shed_total") == 0
            assert sample_sum(server.metrics_port, "blueprint_admission_limit") >= 8
