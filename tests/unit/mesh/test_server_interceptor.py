"""The server interceptor on a real loopback server: what a client sends never turns into
INTERNAL or UNKNOWN when it is the client's doing, and every handler style is served."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.interceptors import ServerInterceptor

ECHO = "/blueprint.diag.v1.Diagnostics/Echo"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


class _Echo(diag_pb2_grpc.DiagnosticsServicer):
    async def Echo(
        self, request: diag_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.EchoResponse:
        return diag_pb2.EchoResponse(payload=request.payload)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ServerInterceptor(None, None)])
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(_Echo(), server)
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection([reflection.SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff", b"\x0a\x02\xff\xfe", b"\x0a\x7fab", b"\x0b" * 100_000],
    ids=["garbage", "invalid UTF-8", "length past the end", "deep groups"],
)
async def test_bytes_that_are_not_the_request_are_invalid_argument(
    channel: grpc.aio.Channel, raw: bytes
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(ECHO)(raw, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "EchoRequest" in (raised.value.details() or "")


async def test_a_request_stream_stops_at_its_first_undecodable_message(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.stream_stream(REFLECTION)(iter([b"\xff\xff"]), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_streaming_handler_that_writes_through_the_context_is_served(
    channel: grpc.aio.Channel,
) -> None:
    # grpc's async health servicer's Watch is a coroutine using context.write().
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def test_a_method_nobody_implemented_is_unimplemented_not_internal(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
