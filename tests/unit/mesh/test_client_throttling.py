"""Client-side adaptive throttling on a real in-process gRPC server.

A target that refuses every call (RESOURCE_EXHAUSTED) soon stops receiving most of
them: the client refuses them itself, marked as its own refusal. One that serves
every call is never throttled, and the setting turns throttling off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from blueprint.mesh.channel import CLIENT_THROTTLED_REASON
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import MemoryRegistry
from blueprint.mesh.errors import overloaded_status
from blueprint.mesh.resilience.retry import STATUS_DETAILS_HEADER
from blueprint.mesh.server import Runtime, ServiceSpec, ServingContext
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics

TAKE = "/test.v1.Quota/Take"
CALLS = 200


class _Quota:
    """Refuses every call while `refusing`; counts the calls that reached it."""

    def __init__(self) -> None:
        self.refusing = True
        self.shedding = False  # refuse as an overloaded server does (RetryInfo, OVERLOADED)
        self.received = 0

    def spec(self) -> ServiceSpec:
        async def add(server: grpc.aio.Server, _: ServingContext) -> None:
            async def take(
                request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
            ) -> bytes:
                self.received += 1
                if self.shedding:
                    await context.abort_with_status(overloaded_status(0.001, 1))  # type: ignore[attr-defined]
                if self.refusing:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota spent")
                return b"ok"

            handler = grpc.method_handlers_generic_handler(
                "test.v1.Quota", {"Take": grpc.unary_unary_rpc_method_handler(take)}
            )
            server.add_generic_rpc_handlers((handler,))

        return ServiceSpec("quota", ["test.v1.Quota"], add)


@pytest.fixture
async def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def quota(registry: MemoryRegistry) -> AsyncIterator[_Quota]:
    quota = _Quota()
    settings = Settings(discovery="memory", propagation_seconds=0, drain_grace_seconds=0)
    runtime = Runtime(quota.spec(), settings, registry, owns_registry=False)
    await runtime.start()
    yield quota
    await runtime.stop()


async def _call_many(client: MeshClient, calls: int = CALLS) -> list[grpc.aio.AioRpcError | bytes]:
    assert await client.wait_for_endpoints("quota", 5)
    take = client.channel("quota").unary_unary(TAKE)
    outcomes: list[grpc.aio.AioRpcError | bytes] = []
    for _ in range(calls):
        try:
            outcomes.append(await take(b"", timeout=5))
        except grpc.aio.AioRpcError as error:
            outcomes.append(error)
    return outcomes


def _client_reason(error: grpc.aio.AioRpcError) -> str | None:
    trailers: Any = error.trailing_metadata()
    for key, value in trailers or ():
        if key == STATUS_DETAILS_HEADER and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return None


async def test_a_target_refusing_every_call_is_mostly_spared_them(
    registry: MemoryRegistry, quota: _Quota
) -> None:
    metrics = Metrics(CollectorRegistry())
    client = MeshClient(Settings(discovery="memory"), registry, metrics=metrics)
    try:
        outcomes = await _call_many(client)
    finally:
        await client.close()
    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(errors) == CALLS
    assert {e.code() for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    local = [e for e in errors if _client_reason(e) == CLIENT_THROTTLED_REASON]
    assert all("throttled by the client" in (e.details() or "") for e in local)
    # With nothing accepted, the n-th call goes out with probability 1/n: a handful do.
    assert quota.received < CALLS / 4
    assert len(local) == CALLS - quota.received
    throttled = metrics.registry.get_sample_value(
        "blueprint_mesh_throttled_total", {"target": "quota"}
    )
    assert throttled == len(local)


async def test_a_target_serving_every_call_is_never_throttled(
    registry: MemoryRegistry, quota: _Quota
) -> None:
    quota.refusing = False
    client = MeshClient(Settings(discovery="memory"), registry)
    try:
        outcomes = await _call_many(client)
    finally:
        await client.close()
    assert outcomes == [b"ok"] * CALLS
    assert quota.received == CALLS


async def test_throttling_can_be_turned_off(registry: MemoryRegistry, quota: _Quota) -> None:
    client = MeshClient(Settings(discovery="memory", throttle_enabled=False), registry)
    try:
        outcomes = await _call_many(client)
    finally:
        await client.close()
    assert quota.received == CALLS
    assert all(isinstance(o, grpc.aio.AioRpcError) and _client_reason(o) is None for o in outcomes)


async def test_a_shed_call_is_not_retried_while_the_target_is_throttled(
    registry: MemoryRegistry, quota: _Quota
) -> None:
    quota.shedding = True
    client = MeshClient(Settings(discovery="memory"), registry)
    try:
        outcomes = await _call_many(client, 20)
    finally:
        await client.close()
    sent = sum(
        isinstance(o, grpc.aio.AioRpcError) and _client_reason(o) != CLIENT_THROTTLED_REASON
        for o in outcomes
    )
    # Only the first call, made before anything was refused, is retried (3 attempts).
    assert quota.received == sent + 2


async def test_without_throttling_a_shed_call_is_retried(
    registry: MemoryRegistry, quota: _Quota
) -> None:
    quota.shedding = True
    client = MeshClient(Settings(discovery="memory", throttle_enabled=False), registry)
    try:
        await _call_many(client, 20)
    finally:
        await client.close()
    assert quota.received == 20 * 3  # max_attempts each: shed calls are safe to repeat
