"""The mesh client factory: typed stubs for a service name, balanced and guarded per call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar, cast

import grpc.aio
from opentelemetry.trace import Tracer

from blueprint.mesh.balancers import make_balancer
from blueprint.mesh.channel import CallPolicy, CallRouter, MeshChannel
from blueprint.mesh.discovery.base import Registry
from blueprint.mesh.pool import EndpointPool
from blueprint.mesh.resilience.breaker import BreakerConfig
from blueprint.mesh.resilience.ejection import EjectionConfig
from blueprint.mesh.resilience.retry import RetryBudget, RetryPolicy
from blueprint.mesh.resilience.throttle import AdaptiveThrottle
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics
from blueprint.mesh.view_guard import ViewGuard

StubT = TypeVar("StubT")


def breaker_config(settings: Settings) -> BreakerConfig:
    return BreakerConfig.from_settings(settings)


def ejection_config(settings: Settings) -> EjectionConfig:
    return EjectionConfig(
        consecutive_failures=settings.ejection_consecutive_failures,
        base_seconds=settings.ejection_base_seconds,
        max_share=settings.ejection_max_share,
    )


def call_policy(settings: Settings) -> CallPolicy:
    """A fresh policy per target: each target has its own retry budget and throttle."""
    return CallPolicy(
        default_timeout=settings.default_timeout_seconds,
        retry=RetryPolicy(
            max_attempts=settings.max_attempts,
            base_seconds=settings.retry_backoff_base_seconds,
            max_backoff_seconds=settings.retry_backoff_max_seconds,
        ),
        budget=RetryBudget(
            ratio=settings.retry_budget_ratio,
            min_per_second=settings.retry_budget_min_per_second,
        ),
        max_in_flight=settings.bulkhead_max_in_flight,
        hedge_after=settings.hedge_after_seconds,
        throttle=AdaptiveThrottle(
            k=settings.throttle_k, window_seconds=settings.throttle_window_seconds
        )
        if settings.throttle_enabled
        else None,
        method_timeouts=settings.method_timeouts,
    )


class MeshClient:
    """One per process: a pool (discovery watch + channels + balancer) per target service.

        client = MeshClient(settings, registry)
        diag = client.stub("diag", DiagnosticsStub)
        reply = await diag.Echo(EchoRequest(payload="hi"))

    `tracer` and `metrics` are optional: without them calls carry no spans and
    record no metrics (the CLI), with them every call does (a server runtime).
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._tracer = tracer
        self._metrics = metrics
        self._routers: dict[str, CallRouter] = {}

    def router(self, service: str) -> CallRouter:
        router = self._routers.get(service)
        if router is None:
            settings = self._settings
            pool = EndpointPool(
                service,
                self._registry,
                make_balancer(settings.balancer_for(service)),
                breaker=breaker_config(settings),
                ejection=ejection_config(settings),
                metrics=self._metrics.mesh if self._metrics is not None else None,
                view_guard=ViewGuard(
                    min_share=settings.discovery_min_share,
                    hold_seconds=settings.discovery_hold_seconds,
                ),
                watch_health=settings.endpoint_health_watch,
            )
            pool.start()
            router = CallRouter(
                pool,
                call_policy(settings),
                hash_key_header=settings.hash_key_header,
                own_address=settings.advertise_host.encode(),
                tracer=self._tracer,
                metrics=self._metrics,
                roots_sampled=settings.trace_sampling_ratio > 0,
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
