"""The mesh client on real in-process gRPC servers: per-call picks and the one retry.

An endpoint that is registered but gone (nothing listens on its port) answers
UNAVAILABLE: idempotent calls must be retried once elsewhere; calls the proto
does not mark idempotent must not be repeated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from blueprint.diag.service import SPEC as DIAG
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.local.processes import free_port
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import Instance, MemoryRegistry
from blueprint.mesh.server import Runtime, ServiceSpec, ServingContext
from blueprint.mesh.settings import Settings

BUMP = "/test.v1.Counter/Bump"  # not in any proto: not idempotent


async def _add_counter(server: grpc.aio.Server, context: ServingContext) -> None:
    async def bump(request: bytes, _: grpc.aio.ServicerContext) -> bytes:
        return context.instance_id.encode()

    handler = grpc.method_handlers_generic_handler(
        "test.v1.Counter", {"Bump": grpc.unary_unary_rpc_method_handler(bump)}
    )
    server.add_generic_rpc_handlers((handler,))


COUNTER = ServiceSpec("counter", ["test.v1.Counter"], _add_counter)


@pytest.fixture
async def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def runtimes(registry: MemoryRegistry) -> AsyncIterator[list[Runtime]]:
    settings = Settings(discovery="memory", propagation_seconds=0, drain_grace_seconds=1)
    started = []
    for spec, instance_id in [(DIAG, "diag-live"), (COUNTER, "counter-live")]:
        runtime = Runtime(
            spec,
            settings.model_copy(update={"instance_id": instance_id}),
            registry,
            owns_registry=False,
        )
        await runtime.start()
        started.append(runtime)
    yield started
    for runtime in started:
        await runtime.stop()


@pytest.fixture
async def client(registry: MemoryRegistry) -> AsyncIterator[MeshClient]:
    mesh = MeshClient(Settings(discovery="memory", balancer="round_robin"), registry)
    yield mesh
    await mesh.close()


async def _register_ghost(registry: MemoryRegistry, service: str) -> None:
    await registry.register(Instance(service, f"{service}-ghost", f"127.0.0.1:{free_port()}"))


async def test_idempotent_calls_are_retried_on_another_endpoint(
    registry: MemoryRegistry, runtimes: list[Runtime], client: MeshClient
) -> None:
    await _register_ghost(registry, "diag")
    stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
    assert await client.wait_for_endpoints("diag", 2)
    served = [(await stub.Echo(diag_pb2.EchoRequest(payload="x"))).instance_id for _ in range(20)]
    assert set(served) == {"diag-live"}
    pool = client.router("diag").pool
    assert {e.instance_id for e in pool.endpoints} == {"diag-live", "diag-ghost"}


async def test_calls_not_marked_idempotent_are_not_repeated(
    registry: MemoryRegistry, runtimes: list[Runtime], client: MeshClient
) -> None:
    await _register_ghost(registry, "counter")
    bump = client.channel("counter").unary_unary(BUMP)
    assert await client.wait_for_endpoints("counter", 2)
    outcomes = []
    for _ in range(20):
        try:
            outcomes.append(await bump(b""))
        except grpc.aio.AioRpcError as error:
            outcomes.append(error.code())
    assert grpc.StatusCode.UNAVAILABLE in outcomes
    assert b"counter-live" in outcomes


async def test_other_errors_are_returned_as_they_are(
    runtimes: list[Runtime], client: MeshClient
) -> None:
    stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Fail(diag_pb2.FailRequest(code=grpc.StatusCode.ABORTED.value[0]))
    assert raised.value.code() == grpc.StatusCode.ABORTED


async def test_a_service_with_no_endpoints_fails_fast_with_unavailable(client: MeshClient) -> None:
    stub = client.stub("nobody", diag_pb2_grpc.DiagnosticsStub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Echo(diag_pb2.EchoRequest(), timeout=0.3)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "nobody" in (raised.value.details() or "")


async def test_graceful_stop_deregisters_the_instance(
    registry: MemoryRegistry, runtimes: list[Runtime]
) -> None:
    diag = runtimes[0]
    await diag.stop()
    assert await registry.instances("diag") == []
    runtimes.remove(diag)
