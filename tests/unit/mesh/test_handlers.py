"""Handlers wrapped at registration, on a real loopback server built as the runtime builds
it: both of grpc's registration paths are wrapped, the admission step sees every call
start and end, and an unsampled call gets the ids and flags the SDK would give it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from prometheus_client import CollectorRegistry

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.errors import DomainError
from blueprint.mesh.handlers import CallWrapper, Context, WrappingServer
from blueprint.mesh.telemetry.metrics import RpcMetrics
from support.waiting import eventually

ECHO = "blueprint.diag.v1.Diagnostics/Echo"
SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


class _SpanEcho(diag_pb2_grpc.DiagnosticsServicer):
    """Answers with the span context the handler runs in: trace id, span id, flags."""

    async def Echo(self, request: diag_pb2.EchoRequest, context: Context) -> diag_pb2.EchoResponse:
        if request.payload == "fail":
            raise ValueError("a bug")
        span = trace.get_current_span().get_span_context()
        return diag_pb2.EchoResponse(
            payload=f"{span.trace_id:032x}-{span.span_id:016x}-{int(span.trace_flags):02x}"
        )


class _Overloaded(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass
class _Permit:
    released: list[tuple[float, grpc.StatusCode]] = field(default_factory=list)

    def release(self, latency_seconds: float, code: grpc.StatusCode) -> None:
        self.released.append((latency_seconds, code))


@dataclass
class _Admission:
    refuse: bool = False
    admitted: list[str] = field(default_factory=list)
    permit: _Permit = field(default_factory=_Permit)

    def governs(self, method: str) -> bool:
        return not method.startswith("grpc.health.")

    def admit_now(self, method: str, remaining: float | None, metadata: object) -> _Permit | None:
        # A refusal is never decided here: the awaiting path does it, as the real gate.
        if self.refuse:
            return None
        self.admitted.append(method)
        return self.permit

    async def admit(self, method: str, context: Context) -> _Permit:
        if self.refuse:
            raise _Overloaded("too busy")
        self.admitted.append(method)
        return self.permit


@dataclass
class _Served:
    channel: grpc.aio.Channel
    metrics: RpcMetrics
    registry: CollectorRegistry
    spans: InMemorySpanExporter
    admission: _Admission


async def _serve(roots_sampled: bool) -> AsyncIterator[_Served]:
    spans = InMemorySpanExporter()
    ratio = 1.0 if roots_sampled else 0.0
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(ratio))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    registry = CollectorRegistry()
    metrics = RpcMetrics(registry)
    admission = _Admission()
    wrapper = CallWrapper(
        provider.get_tracer("test"), metrics, roots_sampled=roots_sampled, admission=admission
    )
    server = WrappingServer(grpc.aio.server(), wrapper)
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(_SpanEcho(), server)
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        ["blueprint.diag.v1.Diagnostics", reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield _Served(channel, metrics, registry, spans, admission)
    await server.stop(None)


@pytest.fixture
async def unsampled() -> AsyncIterator[_Served]:
    async for served in _serve(roots_sampled=False):
        yield served


@pytest.fixture
async def sampled() -> AsyncIterator[_Served]:
    async for served in _serve(roots_sampled=True):
        yield served


def _count(served: _Served, code: str) -> float:
    value = served.registry.get_sample_value(
        "rpc_server_call_duration_seconds_count",
        {"rpc_system_name": "grpc", "rpc_method": ECHO, "rpc_response_status_code": code},
    )
    return value or 0.0


async def _counted(served: _Served, code: str, expected: float) -> None:
    # The server records a call as its handler ends, which may be just after the
    # caller has its answer: wait for it, boundedly.
    await eventually(lambda: _count(served, code) == expected, 10, f"{expected:g} x {code}")


async def _echo(served: _Served, payload: str = "hi", traceparent: str | None = None) -> str:
    metadata = [("traceparent", traceparent)] if traceparent else None
    stub = diag_pb2_grpc.DiagnosticsStub(served.channel)
    reply = await stub.Echo(diag_pb2.EchoRequest(payload=payload), metadata=metadata, timeout=5)
    return reply.payload


async def test_each_call_is_measured_once_and_admitted_then_released(sampled: _Served) -> None:
    for _ in range(3):
        await _echo(sampled)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _echo(sampled, "fail")
    assert raised.value.code() == grpc.StatusCode.INTERNAL

    await _counted(sampled, "OK", 3)
    await _counted(sampled, "INTERNAL", 1)
    in_flight = sampled.registry.get_sample_value(
        "rpc_server_calls_in_flight", {"rpc_method": ECHO}
    )
    assert in_flight == 0
    assert sampled.admission.admitted == [ECHO] * 4
    codes = [code for _, code in sampled.admission.permit.released]
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.INTERNAL]
    assert all(latency >= 0 for latency, _ in sampled.admission.permit.released)
    assert len(sampled.spans.get_finished_spans()) == 4


async def test_a_refused_admission_answers_its_status_and_is_measured(sampled: _Served) -> None:
    sampled.admission.refuse = True
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _echo(sampled)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await _counted(sampled, "RESOURCE_EXHAUSTED", 1)
    assert sampled.admission.permit.released == []


async def test_health_and_reflection_are_served_through_the_wrapping_server(
    unsampled: _Served,
) -> None:
    health = health_pb2_grpc.HealthStub(unsampled.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # Watch is a coroutine that answers through context.write(): wrapped as what it is.
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()

    stub = reflection_pb2_grpc.ServerReflectionStub(unsampled.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([request]), timeout=5):
        names = {s.name for s in answer.list_services_response.service}
        assert "blueprint.diag.v1.Diagnostics" in names
        break
    assert unsampled.spans.get_finished_spans() == ()  # probes are not traced


async def test_an_unsampled_root_still_has_ids_for_logs_and_downstream_calls(
    unsampled: _Served,
) -> None:
    first = await _echo(unsampled)
    second = await _echo(unsampled)
    trace_id, span_id, flags = first.split("-")
    assert int(trace_id, 16) != 0 and int(span_id, 16) != 0
    assert flags == "02"  # not sampled; random trace id (as the SDK marks its own)
    assert first.split("-")[0] != second.split("-")[0]
    assert unsampled.spans.get_finished_spans() == ()
    await _counted(unsampled, "OK", 2)


async def test_an_unsampled_parent_is_continued_without_recording(unsampled: _Served) -> None:
    trace_id, span_id, flags = (await _echo(unsampled, traceparent=UNSAMPLED_PARENT)).split("-")
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span_id != "b7ad6b7169203331"
    assert flags == "00"
    assert unsampled.spans.get_finished_spans() == ()


async def test_a_sampled_parent_is_recorded_even_when_roots_are_not(unsampled: _Served) -> None:
    trace_id, _, flags = (await _echo(unsampled, traceparent=SAMPLED_PARENT)).split("-")
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert flags == "01"
    (span,) = unsampled.spans.get_finished_spans()
    assert span.name == ECHO
    assert span.kind is trace.SpanKind.SERVER
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331
    assert span.attributes is not None
    assert span.attributes["rpc.response.status_code"] == "OK"


class _Recording:
    """The real server, noting which of grpc's registration paths each service took."""

    def __init__(self) -> None:
        self.inner = grpc.aio.server()
        self.generic: list[str] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(getattr(h, "_name", "?") for h in handlers)
        self.inner.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        self.registered.append(service_name)
        self.inner.add_registered_method_handlers(service_name, handlers)  # type: ignore[attr-defined]


async def test_services_reach_grpc_as_generic_handlers_only_and_still_answer() -> None:
    recording = _Recording()
    wrapper = CallWrapper(None, RpcMetrics(registry := CollectorRegistry()))
    server = WrappingServer(recording, wrapper)  # type: ignore[arg-type]
    # Generated code registers both ways; a hand-made service only the registered way.
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(_SpanEcho(), server)
    handler = grpc.unary_unary_rpc_method_handler(
        _SpanEcho().Echo,
        request_deserializer=diag_pb2.EchoRequest.FromString,
        response_serializer=diag_pb2.EchoResponse.SerializeToString,
    )
    server.add_registered_method_handlers("test.Hand", {"Made": handler})
    assert recording.registered == []  # grpc.aio's slow path for registered methods
    assert recording.generic == ["blueprint.diag.v1.Diagnostics", "test.Hand"]

    port = recording.inner.add_insecure_port("127.0.0.1:0")
    await recording.inner.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await diag_pb2_grpc.DiagnosticsStub(channel).Echo(diag_pb2.EchoRequest(), timeout=5)
            made = channel.unary_unary(
                "/test.Hand/Made",
                request_serializer=diag_pb2.EchoRequest.SerializeToString,
                response_deserializer=diag_pb2.EchoResponse.FromString,
            )
            await made(diag_pb2.EchoRequest(), timeout=5)
        for method in (ECHO, "test.Hand/Made"):  # both wrapped: measured
            labels = {"rpc_system_name": "grpc", "rpc_method": method}
            await eventually(
                lambda labels=labels: (
                    registry.get_sample_value(  # type: ignore[misc]
                        "rpc_server_call_duration_seconds_count",
                        {**labels, "rpc_response_status_code": "OK"},
                    )
                    == 1
                ),
                10,
                f"{method} measured",
            )
    finally:
        await recording.inner.stop(None)
