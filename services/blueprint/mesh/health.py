"""What `grpc.health.v1` says about a process: its hard dependencies, checked.

Each service declares its hard dependencies (`Dependencies.add`): a name and a cheap
probe (`SELECT 1`, `PING`) that raises when the dependency does not answer. A
`DependencyChecker` probes them all every `interval_seconds`; after `failures_to_down`
failed probes in a row a dependency is down (before its first good probe, after one),
after one good probe it is up again.
`ServingHealth` turns that into the standard health servicer's statuses:

- the overall name "", the discovery name (e.g. "shortener") and every gRPC service's
  full name: SERVING while every hard dependency is up and the process is not draining,
  NOT_SERVING otherwise. Readiness probes and mesh clients ask these;
- "liveness": SERVING from start to shutdown whatever the dependencies do, since a
  restart brings no database back. Liveness and startup probes ask it.

A change is also handed to `on_change` (the runtime marks the instance serving or not
in discovery), so clients stop sending calls to a replica that could only fail them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from opentelemetry.instrumentation.utils import suppress_instrumentation

from blueprint.mesh.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LIVENESS = "liveness"
Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Dependency:
    name: str  # e.g. "shortener/shard-0/writer"
    probe: Probe  # raises (or times out) when the dependency does not answer


class Dependencies:
    """The hard dependencies a service declares while it is put on the server."""

    def __init__(self) -> None:
        self._declared: dict[str, Dependency] = {}

    def add(self, name: str, probe: Probe) -> None:
        if name in self._declared:
            raise ValueError(f"dependency {name!r} declared twice")
        self._declared[name] = Dependency(name, probe)

    def all(self) -> list[Dependency]:
        return list(self._declared.values())


class DependencyChecker:
    """Probes every dependency in a background task; tells `on_change` when the set of
    down dependencies changes (with that set)."""

    def __init__(
        self,
        dependencies: Sequence[Dependency],
        on_change: Callable[[frozenset[str]], Awaitable[None]],
        *,
        interval_seconds: float,
        timeout_seconds: float,
        failures_to_down: int,
    ) -> None:
        if interval_seconds <= 0 or timeout_seconds <= 0 or failures_to_down < 1:
            raise ValueError("interval and timeout must be > 0, failures_to_down >= 1")
        self._dependencies = list(dependencies)
        self._on_change = on_change
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._failures_to_down = failures_to_down
        # Until a probe succeeds, one failure is enough: a replica whose database is
        # down at start must not announce itself serving first.
        self._failures = {d.name: failures_to_down - 1 for d in self._dependencies}
        self.down: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._dependencies and self._task is None:
            self._task = asyncio.create_task(self._run(), name="dependency checks")

    async def check_once(self) -> frozenset[str]:
        """Probe every dependency once (concurrently); the ones down now."""
        results = await asyncio.gather(*(self._probe(d) for d in self._dependencies))
        for dependency, ok in zip(self._dependencies, results, strict=True):
            self._failures[dependency.name] = 0 if ok else self._failures[dependency.name] + 1
        down = frozenset(n for n, f in self._failures.items() if f >= self._failures_to_down)
        if down != self.down:
            for name in sorted(down - self.down):
                log.warning("hard dependency %s is down: not serving", name)
            for name in sorted(self.down - down):
                log.info("hard dependency %s is back", name)
            self.down = down
            await self._on_change(down)
        return down

    async def _probe(self, dependency: Dependency) -> bool:
        try:
            # Untraced: a span per probe per second would bury the traces that matter.
            with suppress_instrumentation():
                async with asyncio.timeout(self._timeout):
                    await dependency.probe()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure of a probe means "not answering"
            log.debug("probe of %s failed: %r", dependency.name, error)
            return False
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a broken callback must not end the checks
                log.exception("dependency check failed")
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None


class ServingHealth:
    """The health servicer's statuses for one process (see the module doc)."""

    def __init__(
        self,
        servicer: HealthServicer,
        names: Sequence[str],
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.servicer = servicer
        self.names = ["", *dict.fromkeys(n for n in names if n)]
        self._on_change = on_change
        self.down: frozenset[str] = frozenset()
        self.draining = False
        self.serving: bool | None = None  # unknown until started

    async def start(self) -> None:
        await self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._apply()

    async def dependencies_changed(self, down: frozenset[str]) -> None:
        self.down = down
        await self._apply()

    async def drain(self) -> None:
        """Every name NOT_SERVING for good (liveness too: the process is going)."""
        self.draining = True
        await self.servicer.enter_graceful_shutdown()

    async def _apply(self) -> None:
        serving = not self.down and not self.draining
        if serving == self.serving or self.draining:
            return
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.names:
            await self.servicer.set(name, status)
        if self._on_change is not None:
            try:
                await self._on_change(serving)
            except Exception:  # health is set; discovery catches up at the next change
                log.exception("telling discovery serving=%s failed", serving)
