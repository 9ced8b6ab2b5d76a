"""The mesh client tells the balancer how each call ended, not only how long it took.

A real in-process diag server that answers every Echo UNAVAILABLE: its
failures are fast, and the default balancer must still see them as slow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from blueprint.diag.service import SPEC as DIAG
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.balancers import ExpectedLatency
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import MemoryRegistry
from blueprint.mesh.server import Runtime
from blueprint.mesh.settings import Settings


@pytest.fixture
async def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def failing(registry: MemoryRegistry) -> AsyncIterator[Runtime]:
    settings = Settings(
        discovery="memory",
        propagation_seconds=0,
        drain_grace_seconds=1,
        instance_id="diag-failing",
        diag_failure_rate=1.0,
    )
    runtime = Runtime(DIAG, settings, registry, owns_registry=False)
    await runtime.start()
    yield runtime
    await runtime.stop()


async def test_a_fast_failure_reaches_the_balancer_as_a_failure(
    registry: MemoryRegistry, failing: Runtime
) -> None:
    client = MeshClient(Settings(discovery="memory"), registry)  # the default balancer
    try:
        stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        assert await client.wait_for_endpoints("diag", 5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        (endpoint,) = client.router("diag").pool.endpoints
        load = endpoint.load
        assert isinstance(load, ExpectedLatency)
        assert load.latency_seconds() >= 1.0  # the penalty, not the few ms it took
        assert load.outstanding == 0
    finally:
        await client.close()
