"""The Diagnostics servicer: translates messages to the checks and work above."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from google.protobuf import duration_pb2
from opentelemetry import trace

from blueprint.diag import checks, work
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.server import ServiceSpec, ServingContext

log = logging.getLogger(__name__)

_KNOWN_KINDS = {diag_pb2.WORK_KIND_UNSPECIFIED, diag_pb2.WORK_KIND_SLEEP, diag_pb2.WORK_KIND_CPU}


class DiagnosticsServicer(diag_pb2_grpc.DiagnosticsServicer):
    def __init__(
        self,
        instance_id: str,
        *,
        service: str,
        mesh: MeshClient,
        slowdown: float = 1.0,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self._instance_id = instance_id
        self._service = service
        self._mesh = mesh
        self._slowdown = slowdown
        self._failure_rate = failure_rate
        self._rng = rng or random.Random()

    async def Echo(
        self, request: diag_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.EchoResponse:
        checks.check_echo(request.payload)
        if self._failure_rate and self._rng.random() < self._failure_rate:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
        return diag_pb2.EchoResponse(payload=request.payload, instance_id=self._instance_id)

    async def Work(
        self, request: diag_pb2.WorkRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.WorkResponse:
        requested = checks.check_work(request.duration, request.kind, _KNOWN_KINDS)
        seconds = requested.total_seconds() * self._slowdown
        started = time.perf_counter()
        if request.kind == diag_pb2.WORK_KIND_CPU:
            await work.burn_cpu_for(seconds)
        else:
            await work.sleep_for(seconds)
        elapsed = duration_pb2.Duration()
        elapsed.FromNanoseconds(int((time.perf_counter() - started) * 1e9))
        return diag_pb2.WorkResponse(instance_id=self._instance_id, elapsed=elapsed)

    async def Fail(
        self, request: diag_pb2.FailRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.FailResponse:
        checks.check_fail(request.code)
        code = next(c for c in grpc.StatusCode if c.value[0] == request.code)
        await context.abort(code, request.message or f"failed as asked ({code.name})")
        raise AssertionError("abort returned")  # grpc's abort always raises

    async def Ticks(
        self, request: diag_pb2.TicksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[diag_pb2.TicksResponse]:
        interval = checks.check_ticks(request.count, request.interval)
        for sequence in range(1, request.count + 1):
            if sequence > 1:
                await asyncio.sleep(interval.total_seconds())
            yield diag_pb2.TicksResponse(sequence=sequence, instance_id=self._instance_id)

    async def Relay(
        self, request: diag_pb2.RelayRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.RelayResponse:
        work_time = checks.check_relay(request.route, request.work)
        hop = diag_pb2.Hop(service=self._service, instance_id=self._instance_id)
        remaining = context.time_remaining()
        if remaining is not None:
            hop.deadline_remaining.FromNanoseconds(int(remaining * 1e9))
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            hop.trace_id = format(span_context.trace_id, "032x")
        if not request.route:
            try:
                await work.sleep_for(work_time.total_seconds())
            except asyncio.CancelledError:
                log.info("relay work stopped: the call ended", extra={"hop": self._service})
                raise
            return diag_pb2.RelayResponse(hops=[hop])
        next_hop = self._mesh.stub(request.route[0], diag_pb2_grpc.DiagnosticsStub)
        onward = diag_pb2.RelayRequest(route=request.route[1:], work=request.work)
        try:
            # No timeout given: the mesh derives it from this call's deadline.
            reply = await next_hop.Relay(onward)
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), f"{request.route[0]}: {error.details()}")
            raise AssertionError("abort returned") from error
        return diag_pb2.RelayResponse(hops=[hop, *reply.hops])


async def _add(server: grpc.aio.Server, context: ServingContext) -> None:
    settings = context.settings
    servicer = DiagnosticsServicer(
        context.instance_id,
        service=context.service,
        mesh=context.mesh,
        slowdown=settings.diag_slowdown,
        failure_rate=settings.diag_failure_rate,
    )
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(servicer, server)


SPEC = ServiceSpec(
    name="diag",
    grpc_services=[diag_pb2.DESCRIPTOR.services_by_name["Diagnostics"].full_name],
    add_to_server=_add,
)
