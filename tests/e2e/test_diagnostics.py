"""The Diagnostics service on real processes: reflection, health, validation, streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.settings import Settings
from support.mesh import ServerProcess, mesh_env, running
from support.redis_server import delete_prefix


@pytest.fixture(scope="module")
def prefix(redis_url: str) -> Iterator[str]:
    name = f"bptest-{uuid.uuid4().hex[:12]}"
    yield name
    delete_prefix(redis_url, name)


@pytest.fixture(scope="module")
def servers(
    redis_url: str, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    log_dir: Path = tmp_path_factory.mktemp("diag-logs")
    with running("diag", 2, mesh_env(redis_url, prefix), log_dir) as started:
        yield started


@pytest.fixture
async def stub(
    servers: list[ServerProcess], redis_url: str, prefix: str
) -> AsyncIterator[diag_pb2_grpc.DiagnosticsStub]:
    settings = Settings(redis_url=redis_url, redis_prefix=prefix, balancer="round_robin")
    registry = RedisRegistry.from_url(
        redis_url, prefix=prefix, lease_ttl_seconds=3, resync_seconds=0.5
    )
    client = MeshClient(settings, registry)
    assert await client.wait_for_endpoints("diag", 5)
    yield client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
    await client.close()
    await registry.close()


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            bad_request = error_details_pb2.BadRequest()
            assert status.details[0].Unpack(bad_request)
            return {v.field: v.description for v in bad_request.field_violations}
    raise AssertionError("no google.rpc.Status details in the trailers")


def test_reflection_lists_diagnostics_and_health_on_every_instance(
    servers: list[ServerProcess],
) -> None:
    for server in servers:
        with grpc.insecure_channel(server.address) as channel:
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"blueprint.diag.v1.Diagnostics", "grpc.health.v1.Health"} <= services


def test_health_reports_serving_per_service(servers: list[ServerProcess]) -> None:
    with grpc.insecure_channel(servers[0].address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "blueprint.diag.v1.Diagnostics"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as missing:
            health.Check(health_pb2.HealthCheckRequest(service="nope.v1.Nope"), timeout=2)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_calls_are_spread_over_instances(
    stub: diag_pb2_grpc.DiagnosticsStub, servers: list[ServerProcess]
) -> None:
    served = [(await stub.Echo(diag_pb2.EchoRequest(payload="hi"))).instance_id for _ in range(10)]
    assert set(served) == {s.instance_id for s in servers}


@pytest.mark.parametrize("code", [0, -1, 17, 99, 2**31 - 1])
async def test_fail_with_out_of_range_code_is_invalid_argument(
    stub: diag_pb2_grpc.DiagnosticsStub, code: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Fail(diag_pb2.FailRequest(code=code))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "code" in _violations(raised.value)


@pytest.mark.parametrize("status", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE])
async def test_fail_answers_the_requested_code(
    stub: diag_pb2_grpc.DiagnosticsStub, status: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Fail(diag_pb2.FailRequest(code=status.value[0], message="as asked"))
    assert raised.value.code() == status
    assert raised.value.details() == "as asked"


async def test_bad_requests_name_their_fields_and_leave_the_server_serving(
    stub: diag_pb2_grpc.DiagnosticsStub, servers: list[ServerProcess]
) -> None:
    negative = duration_pb2.Duration(seconds=-1)
    too_long = duration_pb2.Duration(seconds=61)
    cases = [
        (stub.Echo, diag_pb2.EchoRequest(payload="x" * (1024 * 1024 + 1)), {"payload"}),
        (stub.Work, diag_pb2.WorkRequest(duration=negative), {"duration"}),
        (stub.Work, diag_pb2.WorkRequest(duration=too_long, kind=7), {"duration", "kind"}),  # type: ignore[arg-type]
    ]
    for method, request, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await method(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(_violations(raised.value)) == fields
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub.Ticks(diag_pb2.TicksRequest(count=0)):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(_violations(raised.value)) == {"count"}
    assert all(s.process.poll() is None for s in servers)


async def test_ticks_stream_in_order(stub: diag_pb2_grpc.DiagnosticsStub) -> None:
    request = diag_pb2.TicksRequest(count=5)
    request.interval.FromMilliseconds(10)
    ticks = [tick async for tick in stub.Ticks(request)]
    assert [t.sequence for t in ticks] == [1, 2, 3, 4, 5]
    assert len({t.instance_id for t in ticks}) == 1


async def test_work_is_slowed_by_the_instance_slowdown(
    redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    env = mesh_env(redis_url, redis_prefix, BLUEPRINT_DIAG_SLOWDOWN="10")
    with running("diag", 1, env, log_dir) as (slow,):
        async with grpc.aio.insecure_channel(slow.address) as channel:
            request = diag_pb2.WorkRequest(kind=diag_pb2.WORK_KIND_SLEEP)
            request.duration.FromMilliseconds(20)
            reply = await diag_pb2_grpc.DiagnosticsStub(channel).Work(request)
    assert reply.elapsed.ToMilliseconds() >= 200
