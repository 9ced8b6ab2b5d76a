"""Load shedding and the end of abandoned calls on a real loopback server: a call over
the limit is answered RESOURCE_EXHAUSTED with RetryInfo while health still answers, and
a handler whose caller gave up is recorded DEADLINE_EXCEEDED or CANCELLED, never UNKNOWN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.admission import Admission
from blueprint.mesh.channel import SENT_TIMEOUT_HEADER
from blueprint.mesh.interceptors import ServerInterceptor
from blueprint.mesh.resilience.retry import retry_info_delay, was_shed
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics
from support.waiting import eventually

WORK = "blueprint.diag.v1.Diagnostics/Work"


class _Blocking(diag_pb2_grpc.DiagnosticsServicer):
    """Work blocks until released; counts how many started."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def Work(
        self, request: diag_pb2.WorkRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.WorkResponse:
        self.started += 1
        await self.release.wait()
        return diag_pb2.WorkResponse(instance_id="blocking")


@dataclass
class _Server:
    channel: grpc.aio.Channel
    servicer: _Blocking
    metrics: Metrics
    admission: Admission

    def count(self, code: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "rpc_server_call_duration_seconds_count",
            {"rpc_system_name": "grpc", "rpc_method": WORK, "rpc_response_status_code": code},
        )
        return value or 0.0


async def _serve(settings: Settings) -> AsyncIterator[_Server]:
    metrics = Metrics(CollectorRegistry())
    admission = Admission(settings, metrics.admission)
    server = grpc.aio.server(interceptors=[ServerInterceptor(None, metrics.rpc, admission)])
    servicer = _Blocking()
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(servicer, server)
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield _Server(channel, servicer, metrics, admission)
    servicer.release.set()
    await server.stop(None)


@pytest.fixture
async def one_slot() -> AsyncIterator[_Server]:
    """A limit of exactly one call and no queue: the second call at once is shed."""
    settings = Settings(
        admission_min_limit=1, admission_initial_limit=1, admission_max_limit=1,
        admission_queue_size=0,
    )  # fmt: skip
    async for server in _serve(settings):
        yield server


@pytest.fixture
async def roomy() -> AsyncIterator[_Server]:
    async for server in _serve(Settings()):
        yield server


def _work(channel: grpc.aio.Channel, timeout: float) -> grpc.aio.UnaryUnaryCall:  # type: ignore[type-arg]
    return diag_pb2_grpc.DiagnosticsStub(channel).Work(diag_pb2.WorkRequest(), timeout=timeout)


async def test_a_call_over_the_limit_is_shed_with_a_time_to_come_back(one_slot: _Server) -> None:
    first = _work(one_slot.channel, timeout=30)
    await eventually(lambda: one_slot.servicer.started == 1, 10, "the first call runs")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _work(one_slot.channel, timeout=30)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = error.trailing_metadata()
    delay = retry_info_delay(trailers)  # type: ignore[arg-type]
    assert delay is not None and delay > 0
    assert was_shed(trailers)  # type: ignore[arg-type]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    assert info.reason == "OVERLOADED" and info.metadata["limit"] == "1"
    assert one_slot.servicer.started == 1  # the shed call never ran
    # Probes are never shed.
    health = await health_pb2_grpc.HealthStub(one_slot.channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    one_slot.servicer.release.set()
    assert (await first).instance_id == "blocking"
    assert one_slot.count("RESOURCE_EXHAUSTED") == 1
    shed = one_slot.metrics.registry.get_sample_value(
        "blueprint_admission_shed_total", {"rpc_method": WORK}
    )
    assert shed == 1
    assert one_slot.metrics.registry.get_sample_value("blueprint_admission_limit") == 1


async def test_a_call_that_says_it_waited_long_before_the_handler_is_shed(
    roomy: _Server,
) -> None:
    # Sent with 35 s, 30 s left on arrival: it stood 5 s in a queue (as the mesh client's
    # header tells; here written by hand).
    # The first such call starts a CoDel interval; late ones after it are shed.
    stub = diag_pb2_grpc.DiagnosticsStub(roomy.channel)
    late = ((SENT_TIMEOUT_HEADER, "35000"),)
    roomy.servicer.release.set()
    await stub.Work(diag_pb2.WorkRequest(), timeout=30, metadata=late)
    await asyncio.sleep(0.2)  # past the 100 ms interval (waiting longer changes nothing)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Work(diag_pb2.WorkRequest(), timeout=30, metadata=late)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert was_shed(raised.value.trailing_metadata())  # type: ignore[arg-type]
    assert roomy.servicer.started == 1


async def test_a_handler_whose_caller_ran_out_of_time_is_recorded_deadline_exceeded(
    roomy: _Server,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _work(roomy.channel, timeout=0.2)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: roomy.count("DEADLINE_EXCEEDED") == 1, 10, "recorded")
    assert roomy.count("UNKNOWN") == 0
    assert roomy.admission.gate.in_flight == 0  # the slot came back


async def test_a_handler_whose_caller_cancelled_is_recorded_cancelled(roomy: _Server) -> None:
    call = _work(roomy.channel, timeout=30)
    await eventually(lambda: roomy.servicer.started == 1, 10, "the call runs")
    call.cancel()
    await eventually(lambda: roomy.count("CANCELLED") == 1, 10, "recorded")
    assert roomy.count("UNKNOWN") == 0
    assert roomy.admission.gate.in_flight == 0
