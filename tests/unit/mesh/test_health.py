"""Health that follows hard dependencies, on real in-process gRPC servers.

A service declares a dependency whose probe a test switches off and on. Health (per
name) turns NOT_SERVING after the configured failed probes and back after one good one,
liveness never moves, discovery learns the serving flag, and a mesh client stops
sending that replica calls. A draining replica that cannot tell discovery is still
avoided: clients follow its own health Watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blueprint.diag.service import SPEC as DIAG
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import Instance, MemoryRegistry
from blueprint.mesh.health import LIVENESS, Dependencies, Dependency, DependencyChecker
from blueprint.mesh.server import Runtime, ServiceSpec, ServingContext
from blueprint.mesh.settings import Settings
from support.waiting import eventually

WITHIN = 30.0  # generous: a loaded machine
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DIAG_API = "blueprint.diag.v1.Diagnostics"


class Switch:
    """A dependency a test takes down and brings back."""

    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise ConnectionRefusedError("switched off")


def _with_dependency(switch: Switch) -> ServiceSpec:
    async def add(server: grpc.aio.Server, context: ServingContext) -> None:
        await DIAG.add_to_server(server, context)
        context.dependencies.add("diag/switch", switch.probe)

    return ServiceSpec(DIAG.name, DIAG.grpc_services, add)


class FlakyRegistry(MemoryRegistry):
    """A memory registry that can be made unreachable (a registry Redis gone)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def register(self, instance: Instance) -> None:
        if self.down:
            raise ConnectionError("registry down")
        await super().register(instance)

    async def deregister(self, instance: Instance) -> None:
        if self.down:
            raise ConnectionError("registry down")
        await super().deregister(instance)


SETTINGS = Settings(
    discovery="memory",
    propagation_seconds=0,
    drain_grace_seconds=1,
    health_check_interval_seconds=0.05,
    health_failures_to_down=2,
)


@pytest.fixture
async def registry() -> FlakyRegistry:
    return FlakyRegistry()


async def _start(spec: ServiceSpec, registry: FlakyRegistry, instance_id: str) -> Runtime:
    runtime = Runtime(
        spec,
        SETTINGS.model_copy(update={"instance_id": instance_id}),
        registry,
        owns_registry=False,
    )
    await runtime.start()
    return runtime


async def _status(runtime: Runtime, name: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return int(reply.status)


async def _statuses(runtime: Runtime) -> dict[str, int]:
    return {name: await _status(runtime, name) for name in ("", "diag", DIAG_API, LIVENESS)}


@pytest.fixture
async def switch() -> Switch:
    return Switch()


@pytest.fixture
async def replicas(registry: FlakyRegistry, switch: Switch) -> AsyncIterator[list[Runtime]]:
    started = [
        await _start(_with_dependency(switch), registry, "diag-deps"),
        await _start(DIAG, registry, "diag-free"),
    ]
    yield started
    for runtime in started:
        await runtime.stop()


async def test_a_dependency_outage_turns_every_name_but_liveness_not_serving_and_back(
    replicas: list[Runtime], switch: Switch, registry: FlakyRegistry
) -> None:
    runtime = replicas[0]
    assert await _statuses(runtime) == {
        "": SERVING,
        "diag": SERVING,
        DIAG_API: SERVING,
        LIVENESS: SERVING,
    }

    switch.up = False
    await eventually(lambda: runtime.serving_health.serving is False, WITHIN, "NOT_SERVING")
    assert await _statuses(runtime) == {
        "": NOT_SERVING, "diag": NOT_SERVING, DIAG_API: NOT_SERVING, LIVENESS: SERVING,
    }  # fmt: skip
    listed = {i.instance_id: i.serving for i in await registry.instances("diag")}
    assert listed == {"diag-deps": False, "diag-free": True}

    switch.up = True
    await eventually(lambda: runtime.serving_health.serving is True, WITHIN, "SERVING again")
    assert await _status(runtime, "") == SERVING
    assert all(i.serving for i in await registry.instances("diag"))


async def test_one_failed_probe_is_not_an_outage(replicas: list[Runtime], switch: Switch) -> None:
    runtime = replicas[0]
    checker = runtime.checker
    assert checker is not None
    await checker.aclose()  # probes by hand from here
    switch.up = False
    assert await checker.check_once() == frozenset()
    assert runtime.serving_health.serving is True
    assert await checker.check_once() == {"diag/switch"}
    assert runtime.serving_health.serving is False
    switch.up = True
    assert await checker.check_once() == frozenset()
    assert runtime.serving_health.serving is True


async def test_a_replica_whose_dependency_is_down_at_start_starts_not_serving(
    registry: FlakyRegistry,
) -> None:
    switch = Switch()
    switch.up = False
    spec = _with_dependency(switch)
    runtime = Runtime(
        spec,
        SETTINGS.model_copy(update={"instance_id": "diag-late"}),  # 2 to down, once up
        registry,
        owns_registry=False,
    )
    await runtime.start()
    try:
        assert await _status(runtime, "") == NOT_SERVING
        assert await _status(runtime, LIVENESS) == SERVING
        assert [i.serving for i in await registry.instances("diag")] == [False]
    finally:
        await runtime.stop()


async def test_clients_stop_calling_a_not_serving_replica_and_come_back(
    replicas: list[Runtime], switch: Switch, registry: FlakyRegistry
) -> None:
    mesh = MeshClient(Settings(discovery="memory", balancer="round_robin"), registry)
    try:
        stub = mesh.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        pool = mesh.router("diag").pool

        async def served(calls: int) -> set[str]:
            replies = [await stub.Echo(diag_pb2.EchoRequest(payload="x")) for _ in range(calls)]
            return {reply.instance_id for reply in replies}

        await eventually(lambda: len(pool.endpoints) == 2, WITHIN, "both in view")
        assert await served(20) == {"diag-deps", "diag-free"}

        switch.up = False
        await eventually(
            lambda: (
                [pool.serving(e) for e in sorted(pool.endpoints, key=lambda e: e.instance_id)]
                == [False, True]
            ),
            WITHIN,
            "the client sees diag-deps not serving",
        )
        assert await served(40) == {"diag-free"}

        switch.up = True
        await eventually(lambda: all(pool.serving(e) for e in pool.endpoints), WITHIN, "back")
        assert await served(20) == {"diag-deps", "diag-free"}
    finally:
        await mesh.close()


async def test_when_no_replica_serves_calls_still_go_somewhere(
    registry: FlakyRegistry, switch: Switch
) -> None:
    runtime = await _start(_with_dependency(switch), registry, "diag-only")
    mesh = MeshClient(Settings(discovery="memory"), registry)
    try:
        switch.up = False
        await eventually(lambda: runtime.serving_health.serving is False, WITHIN, "NOT_SERVING")
        stub = mesh.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        reply = await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=10)
        assert reply.instance_id == "diag-only"  # better tried than refused outright
    finally:
        await mesh.close()
        await runtime.stop()


async def test_a_draining_replica_is_avoided_even_when_discovery_cannot_be_told(
    registry: FlakyRegistry,
) -> None:
    first = await _start(DIAG, registry, "diag-a")
    second = Runtime(
        DIAG,
        SETTINGS.model_copy(update={"instance_id": "diag-b", "propagation_seconds": 3}),
        registry,
        owns_registry=False,
    )
    await second.start()
    mesh = MeshClient(Settings(discovery="memory", balancer="round_robin"), registry)
    try:
        stub = mesh.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        pool = mesh.router("diag").pool
        await eventually(lambda: len(pool.endpoints) == 2, WITHIN, "both in view")
        registry.down = True  # deregistration will fail

        stopping = asyncio.create_task(second.stop())  # NOT_SERVING, waits, drains
        await eventually(
            lambda: {e.instance_id for e in pool.endpoints if pool.serving(e)} == {"diag-a"},
            WITHIN,
            "the client heard diag-b's health Watch",
        )
        assert {i.instance_id for i in await registry.instances("diag")} == {"diag-a", "diag-b"}
        replies = [await stub.Echo(diag_pb2.EchoRequest(payload="x")) for _ in range(30)]
        assert {r.instance_id for r in replies} == {"diag-a"}
        await stopping  # whenever it ends, nothing above depended on it
    finally:
        await mesh.close()
        registry.down = False
        await first.stop()


async def test_a_probe_that_hangs_counts_as_failed_and_a_broken_callback_does_not_stop_checks() -> (
    None
):
    changes: list[frozenset[str]] = []
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()  # a blackholed database: no answer, ever

    async def record(down: frozenset[str]) -> None:
        changes.append(down)
        raise RuntimeError("a broken listener")

    checker = DependencyChecker(
        [Dependency("db", hang)],
        record,
        interval_seconds=0.01,
        timeout_seconds=0.05,
        failures_to_down=1,
    )
    checker.start()
    try:
        await eventually(lambda: changes == [frozenset({"db"})], WITHIN, "down after a timeout")
        assert checker.down == {"db"}
    finally:
        await checker.aclose()


def test_a_dependency_is_declared_once() -> None:
    dependencies = Dependencies()
    dependencies.add("db", Switch().probe)
    with pytest.raises(ValueError, match="twice"):
        dependencies.add("db", Switch().probe)
