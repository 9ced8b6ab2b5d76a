"""The live endpoints of one target service: warm channels kept in step with discovery,
and each endpoint's health (breaker, outlier ejection, transport quarantine)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence, Set
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.discovery.base import Instance, Registry
from blueprint.mesh.endpoint import Endpoint
from blueprint.mesh.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from blueprint.mesh.resilience.ejection import EjectionConfig, OutlierTracker
from blueprint.mesh.resilience.endpoint_health import ENDPOINT_FAILURES, EndpointHealth
from blueprint.mesh.tasks import cancel_and_wait
from blueprint.mesh.telemetry.metrics import BREAKER_STATE_VALUES, MeshMetrics
from blueprint.mesh.view_guard import ViewGuard

log = logging.getLogger(__name__)
_OK = grpc.StatusCode.OK

# Channel options for mesh-internal calls. Keepalive notices a dead peer on an
# idle connection; reconnect backoff is short because discovery, not the
# channel, decides whether an endpoint still exists.
CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
)


_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_HEALTH_RETRY_SECONDS = (0.2, 5.0)  # first and longest wait before re-watching


class EndpointPool:
    """Owns one channel per instance of `service` and the balancer that picks among them.

    An endpoint whose transport failed is quarantined for a moment: it is most
    likely gone, and discovery will confirm within a lease TTL; until then
    calls should not keep paying a failed attempt on it.

    Only serving endpoints are offered to the balancer: discovery's flag (a replica
    with a hard dependency down marks itself so) and, with `watch_health`, the
    endpoint's own `grpc.health.v1` Watch for `service`, which turns NOT_SERVING the
    moment a replica starts draining even when discovery cannot be told. When no
    endpoint serves, all are offered: trying beats failing outright. A discovery read
    that loses most endpoints at once is distrusted for a while (`view_guard`).
    """

    def __init__(
        self,
        service: str,
        registry: Registry,
        balancer: Balancer,
        *,
        breaker: BreakerConfig | None = None,
        ejection: EjectionConfig | None = None,
        metrics: MeshMetrics | None = None,
        quarantine_seconds: float = 2.0,
        channel_close_grace_seconds: float = 10.0,
        view_guard: ViewGuard | None = None,
        watch_health: bool = True,
    ) -> None:
        self.service = service
        self.balancer = balancer
        self._registry = registry
        self._breaker_config = breaker or BreakerConfig()
        self._ejection_config = ejection or EjectionConfig()
        self._metrics = metrics
        # Pick counters by instance, bound on first pick: labels() per call is a lock and a lookup.
        self._pick_counters: dict[str, Any] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._health: dict[str, EndpointHealth] = {}
        self._impaired: set[str] = set()
        self._quarantine_seconds = quarantine_seconds
        self._close_grace = channel_close_grace_seconds
        self._has_endpoints = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._view_guard = view_guard or ViewGuard()
        self._recheck: asyncio.TimerHandle | None = None
        self._watch_health = watch_health
        self._health_watches: dict[str, asyncio.Task[None]] = {}
        self._reported_down: set[str] = set()  # by the endpoint's own health Watch

    def start(self) -> None:
        if self._watch_task is None:
            self._watch_task = asyncio.create_task(self._follow(), name=f"discover {self.service}")

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def health(self, endpoint: Endpoint) -> EndpointHealth:
        return self._health[endpoint.instance_id]

    async def _follow(self) -> None:
        async for instances in self._registry.watch(self.service):
            self._offer(instances)

    def _offer(self, instances: Sequence[Instance]) -> None:
        """Apply a discovery read, unless it is a sudden collapse (`view_guard`)."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        verdict = self._view_guard.offer(instances)
        if verdict.held:
            assert verdict.recheck_in is not None
            log.warning(
                "%s: discovery lists %d of %d endpoints; keeping the last view for up to %.1fs",
                self.service, len(instances), len(self._endpoints), verdict.recheck_in,
            )  # fmt: skip
            if self._metrics is not None:
                self._metrics.discovery_held.labels(self.service).inc()
            # Believed after the hold unless a fuller read comes first.
            self._recheck = asyncio.get_running_loop().call_later(
                verdict.recheck_in, self._offer, list(instances)
            )
        self._apply(verdict.view)

    def _apply(self, instances: Sequence[Instance]) -> None:
        current = {instance.instance_id: instance for instance in instances}
        for instance_id in list(self._endpoints):
            old = self._endpoints[instance_id]
            new = current.get(instance_id)
            if new is not None and dataclasses.replace(new, serving=old.instance.serving) == (
                old.instance
            ):
                old.instance = new  # only the serving flag changed: keep the channel
                continue
            del self._endpoints[instance_id]
            del self._health[instance_id]
            self._pick_counters.pop(instance_id, None)
            self._impaired.discard(instance_id)
            self._reported_down.discard(instance_id)
            self._close_later(old)
            if self._metrics is not None:
                with contextlib.suppress(KeyError):
                    self._metrics.breaker_state.remove(self.service, instance_id)
        for instance_id, instance in current.items():
            if instance_id not in self._endpoints:
                self._endpoints[instance_id] = self._open(instance)
                self._health[instance_id] = self._new_health(instance_id)
        self._offer_serving()
        if self._endpoints:
            self._has_endpoints.set()
        else:
            self._has_endpoints.clear()
        if self._metrics is not None:
            self._metrics.endpoints.labels(self.service).set(len(self._endpoints))
            self._metrics.discovery_changes.labels(self.service).inc()
        log.info("%s endpoints: %s", self.service, sorted(self._endpoints) or "none")

    def serving(self, endpoint: Endpoint) -> bool:
        return endpoint.instance.serving and endpoint.instance_id not in self._reported_down

    def _offer_serving(self) -> None:
        """The balancer gets the serving endpoints, or every endpoint if none serves."""
        endpoints = list(self._endpoints.values())
        self.balancer.update([e for e in endpoints if self.serving(e)] or endpoints)

    def _reported(self, endpoint: Endpoint, serving: bool) -> None:
        instance_id = endpoint.instance_id
        if self._endpoints.get(instance_id) is not endpoint:
            return  # discovery replaced it meanwhile
        if serving == (instance_id not in self._reported_down):
            return
        if serving:
            self._reported_down.discard(instance_id)
        else:
            self._reported_down.add(instance_id)
        status = "SERVING" if serving else "NOT_SERVING"
        log.info("%s/%s reports %s", self.service, instance_id, status)
        self._offer_serving()

    async def _follow_health(self, endpoint: Endpoint) -> None:
        """The endpoint's own word on whether it serves `service` (grpc.health.v1 Watch,
        as gRPC's client-side health checking). A broken stream changes nothing: a gone
        replica is discovery's and the quarantine's business."""
        assert endpoint.channel is not None
        stub = health_pb2_grpc.HealthStub(endpoint.channel)
        wait, longest = _HEALTH_RETRY_SECONDS
        while True:
            try:
                async for reply in stub.Watch(health_pb2.HealthCheckRequest(service=self.service)):
                    wait = _HEALTH_RETRY_SECONDS[0]
                    # SERVICE_UNKNOWN: a server that does not report per name; take its calls.
                    self._reported(endpoint, reply.status != _NOT_SERVING)
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                    return  # no health service: discovery's word only
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)

    def _new_health(self, instance_id: str) -> EndpointHealth:
        def on_transition(state: BreakerState) -> None:
            self._impaired.add(instance_id)
            log.warning("breaker of %s/%s is now %s", self.service, instance_id, state.value)
            if self._metrics is not None:
                value = BREAKER_STATE_VALUES[state.value]
                self._metrics.breaker_state.labels(self.service, instance_id).set(value)
                self._metrics.breaker_transitions.labels(
                    self.service, instance_id, state.value
                ).inc()

        breaker = CircuitBreaker(self._breaker_config, on_transition=on_transition)
        if self._metrics is not None:
            self._metrics.breaker_state.labels(self.service, instance_id).set(0)
        return EndpointHealth(breaker, OutlierTracker(self._ejection_config))

    def _open(self, instance: Instance) -> Endpoint:
        channel = grpc.aio.insecure_channel(instance.address, options=CHANNEL_OPTIONS)
        channel.get_state(try_to_connect=True)  # warm: connect before the first call needs it
        endpoint = Endpoint(instance=instance, load=self.balancer.new_load(), channel=channel)
        if self._watch_health:
            self._health_watches[instance.instance_id] = asyncio.create_task(
                self._follow_health(endpoint), name=f"health of {instance.instance_id}"
            )
        return endpoint

    def _close_later(self, endpoint: Endpoint) -> None:
        watch = self._health_watches.pop(endpoint.instance_id, None)
        if watch is not None:
            watch.cancel()
        channel = endpoint.channel
        if channel is None:
            return
        # In-flight calls finish (or hit the grace) before the channel goes.
        task = asyncio.create_task(channel.close(grace=self._close_grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def pick(self, key: bytes | None, tried: Set[str] = NOTHING_EXCLUDED) -> Endpoint | None:
        """An endpoint not yet tried by this call, avoiding unhealthy ones while any is healthy."""
        if self._impaired:
            avoid = set(tried)
            for instance_id in list(self._impaired):
                health = self._health.get(instance_id)
                if health is None or not health.impaired():
                    self._impaired.discard(instance_id)
                elif not health.available():
                    avoid.add(instance_id)
            endpoint = self.balancer.pick(key, avoid)
            if endpoint is None:
                # Everything is impaired: trying beats failing outright (Envoy's panic mode).
                endpoint = self.balancer.pick(key, tried)
        else:
            endpoint = self.balancer.pick(key, tried)
        if endpoint is not None:
            self._health[endpoint.instance_id].breaker.on_call()
            if self._metrics is not None:
                counter = self._pick_counters.get(endpoint.instance_id)
                if counter is None:
                    counter = self._metrics.picks.labels(
                        self.service, endpoint.instance_id, self.balancer.name
                    )
                    self._pick_counters[endpoint.instance_id] = counter
                counter.inc()
        return endpoint

    def record(self, endpoint: Endpoint, code: grpc.StatusCode, seconds: float) -> None:
        """Feed one attempt's outcome to the endpoint's breaker and outlier tracker."""
        health = self._health.get(endpoint.instance_id)
        if health is None:
            return  # discovery dropped it meanwhile
        # OK first: a StatusCode's hash is computed in Python, and nearly every call is OK.
        failed = code is not _OK and code in ENDPOINT_FAILURES
        health.breaker.on_result(failed, seconds)
        if health.outlier.on_result(failed, may_eject=self._may_eject):
            self._impaired.add(endpoint.instance_id)
            log.warning("ejected %s/%s as an outlier", self.service, endpoint.instance_id)
            if self._metrics is not None:
                self._metrics.ejections.labels(self.service, endpoint.instance_id).inc()
        if code is grpc.StatusCode.UNAVAILABLE and endpoint.channel is not None:
            # A server-sent UNAVAILABLE leaves the channel READY; a dead peer does not.
            state = endpoint.channel.get_state(try_to_connect=False)
            if state is not grpc.ChannelConnectivity.READY:
                health.quarantine(self._quarantine_seconds)
                self._impaired.add(endpoint.instance_id)

    def _may_eject(self) -> bool:
        ejected = sum(1 for h in self._health.values() if h.outlier.is_ejected())
        return ejected + 1 <= self._ejection_config.max_share * len(self._health)

    async def wait_for_endpoints(self, timeout: float) -> bool:
        if self._has_endpoints.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: see discovery/redis.py
                await self._has_endpoints.wait()
        return self._has_endpoints.is_set()

    async def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        if self._watch_task is not None:
            await cancel_and_wait([self._watch_task])
        await cancel_and_wait(list(self._health_watches.values()))
        self._health_watches.clear()
        channels = [e.channel for e in self._endpoints.values() if e.channel is not None]
        self._endpoints.clear()
        await asyncio.gather(*(channel.close(grace=None) for channel in channels))
        for task in list(self._closing):
            task.cancel()
