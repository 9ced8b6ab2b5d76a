"""Mutations with an idempotency key, through the mesh client against a real in-process
gRPC server: the mesh fills in a key when the caller left none, retries the call like an
idempotent one with the same key, and waits out ABORTED + RetryInfo (another attempt in
flight) as told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from blueprint.local.processes import free_port
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import Instance, MemoryRegistry
from blueprint.mesh.idempotency import KEY_PATTERN, body_digest, with_key
from blueprint.mesh.methods import takes_idempotency_key
from blueprint.mesh.settings import Settings
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1 import shortener_pb2_grpc

SHORTEN = "/blueprint.shortener.v1.Shortener/Shorten"


class ScriptedShortener(shortener_pb2_grpc.ShortenerServicer):
    """Answers each Shorten with the next scripted status (OK when the script is done)
    and remembers the key of every attempt it saw."""

    def __init__(self, script: list[grpc.Status]) -> None:
        self.script = script
        self.keys: list[str] = []

    async def Shorten(self, request: pb.ShortenRequest, context: Any) -> pb.ShortenResponse:
        self.keys.append(request.idempotency_key)
        if self.script:
            await context.abort_with_status(self.script.pop(0))
        return pb.ShortenResponse(link=pb.Link(code="abc1234", url=request.url))


def _aborted(retry_after_ms: int | None) -> grpc.Status:
    details = []
    if retry_after_ms is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(retry_after_ms)
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(detail)
    status = status_pb2.Status(code=code_pb2.ABORTED, message="in flight", details=details)
    return rpc_status.to_status(status)


@pytest.fixture
async def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
async def client(registry: MemoryRegistry) -> AsyncIterator[MeshClient]:
    mesh = MeshClient(Settings(discovery="memory", balancer="round_robin"), registry)
    yield mesh
    await mesh.close()


async def _serve(registry: MemoryRegistry, servicer: ScriptedShortener) -> grpc.aio.Server:
    server = grpc.aio.server()
    shortener_pb2_grpc.add_ShortenerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await registry.register(Instance("shortener", "shortener-1", f"127.0.0.1:{port}"))
    return server


def test_the_mutations_that_take_a_key_are_found_in_the_protos() -> None:
    assert takes_idempotency_key(SHORTEN)
    assert takes_idempotency_key("/blueprint.shortener.v1.Shortener/CreatePaste")
    assert not takes_idempotency_key("/blueprint.shortener.v1.Shortener/Resolve")
    assert not takes_idempotency_key("/unknown.v1.Service/Shorten")


def test_a_missing_key_is_filled_in_on_a_copy_and_a_given_one_is_kept() -> None:
    request = pb.ShortenRequest(url="https://example.com/")
    sent, keyed = with_key(SHORTEN, request)
    assert keyed and sent is not request and request.idempotency_key == ""
    assert KEY_PATTERN.fullmatch(sent.idempotency_key)
    mine = pb.ShortenRequest(url="https://example.com/", idempotency_key="order-7")
    assert with_key(SHORTEN, mine) == (mine, True)
    resolve = pb.ResolveRequest(code="abc")
    assert with_key("/blueprint.shortener.v1.Shortener/Resolve", resolve) == (resolve, False)


def test_the_body_digest_ignores_the_key_and_nothing_else() -> None:
    first = pb.ShortenRequest(url="https://example.com/", idempotency_key="a")
    again = pb.ShortenRequest(url="https://example.com/", idempotency_key="b")
    other = pb.ShortenRequest(url="https://example.com/", custom_alias="x", idempotency_key="a")
    assert body_digest(first) == body_digest(again) != body_digest(other)
    assert first.idempotency_key == "a"  # untouched


async def test_a_keyed_mutation_is_retried_elsewhere_with_the_same_key(
    registry: MemoryRegistry, client: MeshClient
) -> None:
    servicer = ScriptedShortener([])
    server = await _serve(registry, servicer)
    ghost = Instance("shortener", "shortener-ghost", f"127.0.0.1:{free_port()}")
    await registry.register(ghost)  # registered, nothing listens: UNAVAILABLE
    try:
        stub = client.stub("shortener", shortener_pb2_grpc.ShortenerStub)
        assert await client.wait_for_endpoints("shortener", 2)
        for _ in range(6):  # round robin: half of the first attempts hit the ghost
            reply = await stub.Shorten(pb.ShortenRequest(url="https://example.com/"))
            assert reply.link.code == "abc1234"
        assert len(servicer.keys) == 6 and len(set(servicer.keys)) == 6
    finally:
        await server.stop(None)


async def test_aborted_with_retry_info_is_retried_after_the_pushback_with_the_same_key(
    registry: MemoryRegistry, client: MeshClient
) -> None:
    servicer = ScriptedShortener([_aborted(50)])
    server = await _serve(registry, servicer)
    try:
        stub = client.stub("shortener", shortener_pb2_grpc.ShortenerStub)
        reply = await stub.Shorten(pb.ShortenRequest(url="https://example.com/"), timeout=5)
        assert reply.link.code == "abc1234"
        assert len(servicer.keys) == 2 and servicer.keys[0] == servicer.keys[1] != ""
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("retry_after_ms", "why"),
    [(None, "the server did not say when"), (5000, "the wait is longer than the deadline")],
)
async def test_aborted_is_not_retried_when_there_is_no_point(
    registry: MemoryRegistry, client: MeshClient, retry_after_ms: int | None, why: str
) -> None:
    servicer = ScriptedShortener([_aborted(retry_after_ms)])
    server = await _serve(registry, servicer)
    try:
        stub = client.stub("shortener", shortener_pb2_grpc.ShortenerStub)
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await stub.Shorten(pb.ShortenRequest(url="https://example.com/"), timeout=1)
        assert aborted.value.code() == grpc.StatusCode.ABORTED
        assert len(servicer.keys) == 1, why
    finally:
        await server.stop(None)
