"""Hedged reads and the bulkhead, on real in-process gRPC servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry

from blueprint.diag.service import SPEC as DIAG
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import MemoryRegistry
from blueprint.mesh.server import Runtime
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics


@pytest.fixture
async def fast_and_slow() -> AsyncIterator[MemoryRegistry]:
    registry = MemoryRegistry()
    runtimes = []
    for instance_id, slowdown in (("diag-fast", 1.0), ("diag-slow", 50.0)):
        settings = Settings(
            discovery="memory",
            instance_id=instance_id,
            diag_slowdown=slowdown,
            propagation_seconds=0,
            drain_grace_seconds=0,
        )
        runtime = Runtime(DIAG, settings, registry, owns_registry=False)
        await runtime.start()
        runtimes.append(runtime)
    yield registry
    for runtime in runtimes:
        await runtime.stop()


def _work(milliseconds: int) -> diag_pb2.WorkRequest:
    request = diag_pb2.WorkRequest(kind=diag_pb2.WORK_KIND_SLEEP)
    request.duration.FromMilliseconds(milliseconds)
    return request


async def test_a_hedged_read_is_answered_by_the_fast_replica(fast_and_slow: MemoryRegistry) -> None:
    metrics = Metrics(CollectorRegistry())
    settings = Settings(discovery="memory", balancer="round_robin", hedge_after_seconds=0.05)
    client = MeshClient(settings, fast_and_slow, metrics=metrics)
    try:
        assert await client.wait_for_endpoints("diag", 2)
        stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        # 10 ms of work: the fast replica answers in ~10 ms, the slow one in ~500 ms.
        served = [(await stub.Work(_work(10), timeout=5)).instance_id for _ in range(6)]
    finally:
        await client.close()
    assert set(served) == {"diag-fast"}
    hedges = metrics.registry.get_sample_value("blueprint_mesh_hedges_total", {"target": "diag"})
    assert hedges is not None and hedges >= 3  # round robin sent half the first tries to slow


async def test_without_hedging_the_slow_replica_answers_its_share(
    fast_and_slow: MemoryRegistry,
) -> None:
    client = MeshClient(Settings(discovery="memory", balancer="round_robin"), fast_and_slow)
    try:
        assert await client.wait_for_endpoints("diag", 2)
        stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        served = [(await stub.Work(_work(10), timeout=5)).instance_id for _ in range(4)]
    finally:
        await client.close()
    assert served.count("diag-slow") == 2


async def test_the_bulkhead_refuses_calls_beyond_its_limit_at_once() -> None:
    registry = MemoryRegistry()
    server_settings = Settings(discovery="memory", propagation_seconds=0, drain_grace_seconds=0)
    runtime = Runtime(DIAG, server_settings, registry, owns_registry=False)
    await runtime.start()
    metrics = Metrics(CollectorRegistry())
    client = MeshClient(
        Settings(discovery="memory", bulkhead_max_in_flight=2), registry, metrics=metrics
    )
    try:
        assert await client.wait_for_endpoints("diag", 2)
        stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        running = [asyncio.ensure_future(stub.Work(_work(500), timeout=10)) for _ in range(2)]
        await asyncio.sleep(0.1)  # both sent; each takes 500 ms
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await asyncio.gather(*running)
        assert (await stub.Echo(diag_pb2.EchoRequest(payload="x"))).payload == "x"
    finally:
        await client.close()
        await runtime.stop()
    rejected = metrics.registry.get_sample_value(
        "blueprint_mesh_bulkhead_rejections_total", {"target": "diag"}
    )
    assert rejected == 1
