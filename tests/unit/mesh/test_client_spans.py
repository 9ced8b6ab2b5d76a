"""The mesh client's spans when roots are never sampled: none recorded, the trace context
still sent (so the next hop and the logs share a trace id), and a sampled parent still
traced as the parent-based sampler says."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from prometheus_client import CollectorRegistry

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import StaticRegistry
from blueprint.mesh.handlers import Context
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics


class _TraceparentEcho(diag_pb2_grpc.DiagnosticsServicer):
    async def Echo(self, request: diag_pb2.EchoRequest, context: Context) -> diag_pb2.EchoResponse:
        sent = dict(context.invocation_metadata() or ()).get("traceparent", "")
        return diag_pb2.EchoResponse(payload=str(sent))


@pytest.fixture
async def traced_client() -> AsyncIterator[tuple[MeshClient, InMemorySpanExporter]]:
    server = grpc.aio.server()
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(_TraceparentEcho(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    endpoints = {"diag": [f"127.0.0.1:{port}"]}
    settings = Settings(discovery="static", static_endpoints=endpoints, trace_sampling_ratio=0)
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    client = MeshClient(
        settings,
        StaticRegistry(endpoints),
        tracer=provider.get_tracer("test"),
        metrics=Metrics(CollectorRegistry()),
    )
    yield client, spans
    await client.close()
    await server.stop(None)


async def _sent_traceparent(client: MeshClient) -> str:
    stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
    return (await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)).payload


async def test_an_unsampled_call_records_nothing_but_sends_its_trace_context(
    traced_client: tuple[MeshClient, InMemorySpanExporter],
) -> None:
    client, spans = traced_client
    first, second = await _sent_traceparent(client), await _sent_traceparent(client)
    version, trace_id, span_id, flags = first.split("-")
    assert (version, flags) == ("00", "02")  # not sampled; random trace id
    assert int(trace_id, 16) and int(span_id, 16)
    assert second.split("-")[1] != trace_id  # each call outside a trace starts its own
    assert spans.get_finished_spans() == ()


async def test_a_call_inside_a_sampled_trace_is_recorded_in_it(
    traced_client: tuple[MeshClient, InMemorySpanExporter],
) -> None:
    client, spans = traced_client
    parent = trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    with trace.use_span(trace.NonRecordingSpan(parent)):
        sent = await _sent_traceparent(client)
    assert sent.startswith("00-0af7651916cd43dd8448eb211c80319c-") and sent.endswith("-01")
    (span,) = spans.get_finished_spans()
    assert span.kind is trace.SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331
    assert sent.split("-")[2] == format(span.context.span_id, "016x")
