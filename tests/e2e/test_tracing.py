"""One call across three services is one trace, with the right parent/child chain.

The call: client -> hop-a -> hop-b -> hop-c through Diagnostics.Relay, each hop
a real gRPC server reached through the mesh. Checked twice: with the three
servers in this process and an in-memory exporter, and with three real
processes exporting over OTLP/gRPC to a receiver this test runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from blueprint.diag.service import SPEC as DIAG
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import MemoryRegistry, RedisRegistry
from blueprint.mesh.server import Runtime
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry import tracing
from support.mesh import mesh_env, start_server, stop
from support.otlp_receiver import OtlpReceiver

HOPS = ("hop-a", "hop-b", "hop-c")
RELAY = "blueprint.diag.v1.Diagnostics/Relay"


def _client_tracer(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
async def in_process_mesh() -> AsyncIterator[tuple[MeshClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    registry = MemoryRegistry()
    runtimes = []
    for hop in HOPS:
        settings = Settings(
            discovery="memory",
            register_as=hop,
            instance_id=f"{hop}-1",
            propagation_seconds=0,
            drain_grace_seconds=1,
        )
        runtime = Runtime(
            DIAG,
            settings,
            registry,
            owns_registry=False,
            span_processors=[SimpleSpanProcessor(exporter)],
        )
        await runtime.start()
        runtimes.append(runtime)
    provider = _client_tracer(exporter)
    client = MeshClient(Settings(discovery="memory"), registry, tracer=tracing.tracer(provider))
    yield client, exporter
    await client.close()
    for runtime in runtimes:
        await runtime.stop()


def _by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


async def test_one_call_through_three_services_is_one_trace_in_memory(
    in_process_mesh: tuple[MeshClient, InMemorySpanExporter],
) -> None:
    client, exporter = in_process_mesh
    stub = client.stub("hop-a", diag_pb2_grpc.DiagnosticsStub)
    reply = await stub.Relay(diag_pb2.RelayRequest(route=["hop-b", "hop-c"]), timeout=5)
    assert [h.service for h in reply.hops] == list(HOPS)

    spans = [s for s in exporter.get_finished_spans() if s.name == RELAY]
    assert len(spans) == 6  # a CLIENT span per call (3) and a SERVER span per hop (3)
    assert len({s.context.trace_id for s in spans}) == 1
    assert {h.trace_id for h in reply.hops} == {format(spans[0].context.trace_id, "032x")}

    by_id = {s.context.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent is None]
    assert root.kind is SpanKind.CLIENT
    chain = [root]
    while True:
        children = [s for s in spans if s.parent and s.parent.span_id == chain[-1].context.span_id]
        if not children:
            break
        assert len(children) == 1
        chain.append(children[0])
    kinds = [s.kind for s in chain]
    assert kinds == [SpanKind.CLIENT, SpanKind.SERVER] * 3
    servers = [s.resource.attributes["service.name"] for s in _by_kind(chain, SpanKind.SERVER)]
    assert servers == list(HOPS)
    for span in chain:
        assert span.attributes is not None
        assert span.attributes["rpc.system.name"] == "grpc"
        assert span.attributes["rpc.method"] == RELAY
        assert span.attributes["rpc.response.status_code"] == "OK"
    assert len(by_id) == 6


async def test_hostile_trace_headers_are_ignored_without_failing_the_call(
    in_process_mesh: tuple[MeshClient, InMemorySpanExporter],
) -> None:
    client, exporter = in_process_mesh
    stub = client.stub("hop-c", diag_pb2_grpc.DiagnosticsStub)
    hostile = [
        [("traceparent", "garbage")],
        [("traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01")],  # all-zero ids: invalid
        [("traceparent", "ff-" + "a" * 32 + "-" + "b" * 16 + "-01")],  # forbidden version
        [("traceparent", "00-" + "a" * 5000)],
        [("tracestate", "=,=,," * 500), ("traceparent", "\u00e9\u00e9")],
        [("traceparent-bin", b"\x00\xff" * 40)],
    ]
    for metadata in hostile:
        reply = await stub.Echo(diag_pb2.EchoRequest(payload="ok"), metadata=metadata, timeout=5)
        assert reply.payload == "ok"
    echo_servers = [
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.SERVER and s.name.endswith("/Echo")
    ]
    # Each hostile call still got a valid server span, in the client's trace.
    assert len(echo_servers) == len(hostile)
    assert all(s.context.is_valid and s.parent is not None for s in echo_servers)


async def test_one_call_through_three_processes_arrives_as_one_trace_over_otlp(
    redis_url: str, redis_prefix: str, log_dir: Path
) -> None:
    receiver = OtlpReceiver()
    await receiver.start()
    servers = []
    try:
        for hop in HOPS:
            env = mesh_env(
                redis_url,
                redis_prefix,
                BLUEPRINT_REGISTER_AS=hop,
                BLUEPRINT_OTLP_ENDPOINT=receiver.endpoint,
            )
            servers.append(start_server("diag", f"{hop}-1", env, log_dir))
        exporter = InMemorySpanExporter()
        registry = RedisRegistry.from_url(
            redis_url, prefix=redis_prefix, lease_ttl_seconds=2, resync_seconds=0.25
        )
        client = MeshClient(
            Settings(discovery="redis"), registry, tracer=tracing.tracer(_client_tracer(exporter))
        )
        try:
            stub = client.stub("hop-a", diag_pb2_grpc.DiagnosticsStub)
            reply = await stub.Relay(diag_pb2.RelayRequest(route=["hop-b", "hop-c"]), timeout=10)
        finally:
            await client.close()
            await registry.close()
        (root,) = exporter.get_finished_spans()
        trace_id = format(root.context.trace_id, "032x")
        assert {h.trace_id for h in reply.hops} == {trace_id}
        received = await receiver.spans_of_trace(trace_id, count=5, timeout=15)
    finally:
        stop(servers)
        await receiver.stop()

    assert len(received) == 5, received  # 3 SERVER spans + 2 CLIENT spans from the processes
    root_id = format(root.context.span_id, "016x")
    server_kind, client_kind = 2, 3  # OTLP's SPAN_KIND_SERVER, SPAN_KIND_CLIENT
    chain_parent = root_id
    for index, hop in enumerate(HOPS):
        (server_span,) = [
            s for s in received if s.kind == server_kind and s.parent_span_id == chain_parent
        ]
        assert server_span.service == hop and server_span.name == RELAY
        if index == len(HOPS) - 1:
            break
        (client_span,) = [
            s for s in received if s.kind == client_kind and s.parent_span_id == server_span.span_id
        ]
        assert client_span.service == hop
        chain_parent = client_span.span_id
