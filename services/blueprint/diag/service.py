"""The Diagnostics servicer: translates messages to the checks and work above."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from google.protobuf import duration_pb2

from blueprint.diag import checks, work
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.server import ServiceSpec, ServingContext

_KNOWN_KINDS = {diag_pb2.WORK_KIND_UNSPECIFIED, diag_pb2.WORK_KIND_SLEEP, diag_pb2.WORK_KIND_CPU}


class DiagnosticsServicer(diag_pb2_grpc.DiagnosticsServicer):
    def __init__(self, instance_id: str, slowdown: float) -> None:
        self._instance_id = instance_id
        self._slowdown = slowdown

    async def Echo(
        self, request: diag_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.EchoResponse:
        checks.check_echo(request.payload)
        return diag_pb2.EchoResponse(payload=request.payload, instance_id=self._instance_id)

    async def Work(
        self, request: diag_pb2.WorkRequest, context: grpc.aio.ServicerContext
    ) -> diag_pb2.WorkResponse:
        requested = request.duration.ToTimedelta()
        checks.check_work(requested, request.kind, _KNOWN_KINDS)
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
        interval = request.interval.ToTimedelta()
        checks.check_ticks(request.count, interval)
        for sequence in range(1, request.count + 1):
            if sequence > 1:
                await asyncio.sleep(interval.total_seconds())
            yield diag_pb2.TicksResponse(sequence=sequence, instance_id=self._instance_id)


async def _add(server: grpc.aio.Server, context: ServingContext) -> None:
    servicer = DiagnosticsServicer(context.instance_id, context.settings.diag_slowdown)
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(servicer, server)


SPEC = ServiceSpec(
    name="diag",
    grpc_services=[diag_pb2.DESCRIPTOR.services_by_name["Diagnostics"].full_name],
    add_to_server=_add,
)
