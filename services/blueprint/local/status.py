"""`blueprint status`: what discovery knows, and whether each instance answers."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blueprint.mesh.discovery import Instance, Registry


async def health_of(address: str, timeout: float = 1.0) -> str:
    """The standard health check's answer, or the status code that came instead."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def report(registry: Registry) -> str:
    instances: list[Instance] = []
    for service in await registry.services():
        instances += await registry.instances(service)
    if not instances:
        return "no instances registered"
    healths = await asyncio.gather(*(health_of(i.address) for i in instances))
    rows = [("SERVICE", "INSTANCE", "ADDRESS", "WEIGHT", "HEALTH", "METRICS PORT")]
    rows += [
        (
            i.service,
            i.instance_id,
            i.address,
            str(i.weight),
            health,
            i.metadata.get("metrics_port", "-"),
        )
        for i, health in zip(instances, healths, strict=True)
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
