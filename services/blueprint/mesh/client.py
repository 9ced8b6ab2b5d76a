"""The mesh client factory: typed stubs for a service name, balanced per call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar, cast

import grpc.aio

from blueprint.mesh.balancers import make_balancer
from blueprint.mesh.channel import CallRouter, MeshChannel
from blueprint.mesh.discovery.base import Registry
from blueprint.mesh.pool import EndpointPool
from blueprint.mesh.settings import Settings

StubT = TypeVar("StubT")


class MeshClient:
    """One per process: a pool (discovery watch + channels + balancer) per target service.

    client = MeshClient(settings, registry)
    diag = client.stub("diag", DiagnosticsStub)
    reply = await diag.Echo(EchoRequest(payload="hi"))
    """

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self._settings = settings
        self._registry = registry
        self._routers: dict[str, CallRouter] = {}

    def router(self, service: str) -> CallRouter:
        router = self._routers.get(service)
        if router is None:
            balancer = make_balancer(self._settings.balancer_for(service))
            pool = EndpointPool(service, self._registry, balancer)
            pool.start()
            router = CallRouter(
                pool,
                default_timeout=self._settings.default_timeout_seconds,
                hash_key_header=self._settings.hash_key_header,
                own_address=self._settings.advertise_host.encode(),
            )
            self._routers[service] = router
        return router

    def channel(self, service: str) -> MeshChannel:
        """A channel-like object for generated stubs or hand-built multicallables."""
        return MeshChannel(self.router(service))

    def stub(self, service: str, stub_class: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A generated stub whose calls go through the mesh.

        Typed as taking an aio channel, so mypy-protobuf's overloads give the
        async stub type (`DiagnosticsAsyncStub`): calls are awaited.
        """
        return stub_class(cast(grpc.aio.Channel, self.channel(service)))

    async def wait_for_endpoints(self, service: str, timeout: float) -> bool:
        return await self.router(service).pool.wait_for_endpoints(timeout)

    async def close(self) -> None:
        routers = list(self._routers.values())
        self._routers.clear()
        await asyncio.gather(*(router.pool.close() for router in routers))
