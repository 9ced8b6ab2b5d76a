"""The live endpoints of one target service: warm channels kept in step with discovery,
and each endpoint's health (breaker, outlier ejection, transport quarantine)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence, Set
from typing import Any

import grpc
import grpc.aio

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.discovery.base import Instance, Registry
from blueprint.mesh.endpoint import Endpoint
from blueprint.mesh.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from blueprint.mesh.resilience.ejection import EjectionConfig, OutlierTracker
from blueprint.mesh.resilience.endpoint_health import ENDPOINT_FAILURES, EndpointHealth
from blueprint.mesh.tasks import cancel_and_wait
from blueprint.mesh.telemetry.metrics import BREAKER_STATE_VALUES, MeshMetrics

log = logging.getLogger(__name__)

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


class EndpointPool:
    """Owns one channel per instance of `service` and the balancer that picks among them.

    An endpoint whose transport failed is quarantined for a moment: it is most
    likely gone, and discovery will confirm within a lease TTL; until then
    calls should not keep paying a failed attempt on it.
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
            self._apply(instances)

    def _apply(self, instances: Sequence[Instance]) -> None:
        current = {instance.instance_id: instance for instance in instances}
        for instance_id in list(self._endpoints):
            old = self._endpoints[instance_id]
            if current.get(instance_id) != old.instance:
                del self._endpoints[instance_id]
                del self._health[instance_id]
                self._pick_counters.pop(instance_id, None)
                self._impaired.discard(instance_id)
                self._close_later(old)
                if self._metrics is not None:
                    with contextlib.suppress(KeyError):
                        self._metrics.breaker_state.remove(self.service, instance_id)
        for instance_id, instance in current.items():
            if instance_id not in self._endpoints:
                self._endpoints[instance_id] = self._open(instance)
                self._health[instance_id] = self._new_health(instance_id)
        self.balancer.update(list(self._endpoints.values()))
        if self._endpoints:
            self._has_endpoints.set()
        else:
            self._has_endpoints.clear()
        if self._metrics is not None:
            self._metrics.endpoints.labels(self.service).set(len(self._endpoints))
            self._metrics.discovery_changes.labels(self.service).inc()
        log.info("%s endpoints: %s", self.service, sorted(self._endpoints) or "none")

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
        return Endpoint(instance=instance, load=self.balancer.new_load(), channel=channel)

    def _close_later(self, endpoint: Endpoint) -> None:
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
        failed = code in ENDPOINT_FAILURES
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
        if self._watch_task is not None:
            await cancel_and_wait([self._watch_task])
        channels = [e.channel for e in self._endpoints.values() if e.channel is not None]
        self._endpoints.clear()
        await asyncio.gather(*(channel.close(grace=None) for channel in channels))
        for task in list(self._closing):
            task.cancel()
