"""The server runtime every service runs in: `blueprint serve NAME`.

One `serve` builds everything and passes it in: the gRPC server with the
standard health and reflection services, each handler wrapped in the per-call
work (`mesh.handlers`: tracing, metrics, deadline, error mapping), a
Prometheus `/metrics` port, a mesh client for calling other services, and
discovery registration. SIGTERM drains gracefully: NOT_SERVING, deregister,
wait one propagation interval so clients stop picking us, then let in-flight
calls finish within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from blueprint import __version__
from blueprint.mesh import eventloop, ready
from blueprint.mesh.admission import Admission
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import Instance, Registry, open_registry
from blueprint.mesh.handlers import CallWrapper, WrappingServer
from blueprint.mesh.health import Dependencies, DependencyChecker, ServingHealth
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.instrumentation import instrument_sql
from blueprint.mesh.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingContext:
    """What a service's wiring receives: its identity, settings and the mesh."""

    service: str
    instance_id: str
    settings: Settings
    mesh: MeshClient
    metrics: Metrics
    # For instrumenting the service's own clients (telemetry.instrumentation).
    tracer_provider: TracerProvider | NoOpTracerProvider
    # Where the service declares its hard dependencies (mesh/health.py).
    dependencies: Dependencies = field(default_factory=Dependencies)


Cleanup = Callable[[], Awaitable[None]]


class CannotBind(OSError):
    def __init__(self, address: str) -> None:
        super().__init__(f"cannot listen on {address}: in use, or not an address of this host")


@dataclass(frozen=True)
class ServiceSpec:
    """How to put one service on a server.

    `add_to_server` registers the servicers and opens what they need; it may
    return a cleanup that the runtime awaits after the last call has drained
    (closing database pools, Redis clients).
    """

    name: str  # the discovery name, e.g. "diag"
    grpc_services: Sequence[str]  # fully-qualified names, e.g. "blueprint.diag.v1.Diagnostics"
    add_to_server: Callable[[grpc.aio.Server, ServingContext], Awaitable[Cleanup | None]]


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    age_ms = int(settings.max_connection_age_seconds * 1000)
    return [
        # Clients outside the mesh hold one connection; ageing it out lets
        # them re-resolve and spread over replicas (and over a new colour).
        ("grpc.max_connection_age_ms", age_ms),
        ("grpc.max_connection_age_grace_ms", int(settings.drain_grace_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
    ]


class Runtime:
    """A started server: address, ports, and the graceful stop sequence."""

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        registry: Registry,
        *,
        owns_registry: bool = True,
        span_processors: Sequence[SpanProcessor] = (),
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.registry = registry
        self._owns_registry = owns_registry
        self._span_processors = span_processors
        # Each runtime has its own metrics registry: two services in one test
        # process must not share (or collide on) series.
        self.metrics_registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.metrics_registry)
        self.metrics = Metrics(self.metrics_registry)
        self.server: grpc.aio.Server | None = None
        self.health = HealthServicer()
        self.serving_health: ServingHealth | None = None
        self.checker: DependencyChecker | None = None
        self.mesh: MeshClient | None = None
        self.admission: Admission | None = None
        self.tracer_provider: object | None = None
        self.port = 0
        self.metrics_port = 0
        self.instance: Instance | None = None
        self._metrics_server: object | None = None
        self._cleanup: Cleanup | None = None

    @property
    def name(self) -> str:
        """The discovery name: the spec's, unless BLUEPRINT_REGISTER_AS says otherwise."""
        return self.settings.register_as or self.spec.name

    async def start(self) -> Instance:
        settings = self.settings
        name = self.name
        # Host and pid: unique on a machine and, in Kubernetes, the pod name.
        instance_id = settings.instance_id or f"{name}-{socket.gethostname()}-{os.getpid()}"
        provider = tracing.tracer_provider(
            settings, name, instance_id, processors=self._span_processors
        )
        self.tracer_provider = provider
        tracer = tracing.tracer(provider) if settings.telemetry_enabled else None
        rpc_metrics = self.metrics.rpc if settings.telemetry_enabled else None
        self.admission = Admission(
            settings, self.metrics.admission if settings.telemetry_enabled else None
        )
        # No interceptors: every handler is wrapped once as it is registered (mesh.handlers).
        wrapper = CallWrapper(
            tracer,
            rpc_metrics,
            roots_sampled=settings.trace_sampling_ratio > 0,
            admission=self.admission,
        )
        self.server = WrappingServer(grpc.aio.server(options=_server_options(settings)), wrapper)
        address = f"{settings.bind_host}:{settings.port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as error:  # grpcio's way of saying the port is taken
            raise CannotBind(address) from error
        if self.port == 0:
            raise CannotBind(address)
        self.mesh = MeshClient(
            settings,
            self.registry,
            tracer=tracer,
            metrics=self.metrics if settings.telemetry_enabled else None,
        )
        self.metrics.build_info.labels(name, instance_id, __version__).set(1)
        instrument_sql(provider)
        context = ServingContext(name, instance_id, settings, self.mesh, self.metrics, provider)
        self._cleanup = await self.spec.add_to_server(self.server, context)
        self.serving_health = ServingHealth(
            self.health, [name, *self.spec.grpc_services], on_change=self._serving_changed
        )
        self.checker = DependencyChecker(
            context.dependencies.all(),
            self.serving_health.dependencies_changed,
            interval_seconds=settings.health_check_interval_seconds,
            timeout_seconds=settings.health_check_timeout_seconds,
            failures_to_down=settings.health_failures_to_down,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *self.spec.grpc_services,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        try:
            metrics_server, _ = start_http_server(
                settings.metrics_port, addr=settings.bind_host, registry=self.metrics_registry
            )
        except OSError as error:
            raise CannotBind(f"{settings.bind_host}:{settings.metrics_port}") from error
        self._metrics_server = metrics_server
        self.metrics_port = metrics_server.server_port
        await self.server.start()
        await self.checker.check_once()  # a replica whose database is down starts NOT_SERVING
        await self.serving_health.start()
        self.instance = Instance(
            service=name,
            instance_id=instance_id,
            address=f"{settings.advertise_host}:{self.port}",
            weight=settings.weight,
            metadata={"metrics_port": str(self.metrics_port)},
            serving=bool(self.serving_health.serving),
        )
        await self.registry.register(self.instance)
        self.checker.start()
        log.info(
            "serving",
            extra={
                "address": self.instance.address,
                "metrics_port": self.metrics_port,
                "grpc_services": list(self.spec.grpc_services),
            },
        )
        ready.report(settings.ready_file, ready.Bound(os.getpid(), self.port, self.metrics_port))
        return self.instance

    async def _serving_changed(self, serving: bool) -> None:
        """Tell discovery, so clients route around a replica that could only fail calls."""
        if self.instance is not None and self.instance.serving != serving:
            self.instance = replace(self.instance, serving=serving)
            await self.registry.register(self.instance)

    async def stop(self) -> None:
        """The graceful sequence; every step runs even if an earlier one failed."""
        if self.checker is not None:
            await self.checker.aclose()
        if self.serving_health is not None:
            await self.serving_health.drain()
        else:
            await self.health.enter_graceful_shutdown()
        if self.instance is not None:
            try:
                await self.registry.deregister(self.instance)
            except Exception:  # a lease that lapses does the same job, later
                log.exception("deregistration failed; the lease will expire instead")
        await asyncio.sleep(self.settings.propagation_seconds)
        log.info("draining", extra={"grace_seconds": self.settings.drain_grace_seconds})
        if self.server is not None:
            await self.server.stop(self.settings.drain_grace_seconds)
        if self.admission is not None:
            await self.admission.close()
        if self._cleanup is not None:
            try:
                await self._cleanup()
            except Exception:  # the process is going anyway; say what leaked
                log.exception("service cleanup failed")
        if self.mesh is not None:
            await self.mesh.close()
        if isinstance(self.tracer_provider, TracerProvider):
            await asyncio.to_thread(self.tracer_provider.shutdown)  # flushes pending spans
        if self._owns_registry:
            await self.registry.close()
        if self._metrics_server is not None:
            shutdown = getattr(self._metrics_server, "shutdown", None)
            if shutdown is not None:
                await asyncio.to_thread(shutdown)
        log.info("stopped")


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        stack = io.StringIO()
        task.print_stack(file=stack)
        # Follow what the coroutine awaits, through async generators too.
        awaited: Any = task.get_coro()
        chain = []
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        log.warning("task %s", task.get_name(), extra={"stack": stack.getvalue(), "awaits": chain})


async def serve(spec: ServiceSpec, settings: Settings, *, redis_url: str | None = None) -> None:
    """Run `spec` until SIGTERM or SIGINT, then stop gracefully."""
    runtime = Runtime(spec, settings, open_registry(settings, redis_url=redis_url))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # SIGUSR1: write every task's stack to the log, to see what a stuck process awaits.
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    try:
        await runtime.start()
        eventloop.settle_heap()
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        await runtime.stop()
