"""The live endpoints of one target service: warm channels kept in step with discovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence, Set

import grpc
import grpc.aio

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.discovery.base import Instance, Registry
from blueprint.mesh.endpoint import Endpoint

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

    An endpoint that answered UNAVAILABLE is quarantined for a moment: it is
    most likely gone, and discovery will confirm within a lease TTL; until
    then calls should not keep paying a failed attempt on it.
    """

    def __init__(
        self,
        service: str,
        registry: Registry,
        balancer: Balancer,
        *,
        quarantine_seconds: float = 2.0,
        channel_close_grace_seconds: float = 10.0,
    ) -> None:
        self.service = service
        self.balancer = balancer
        self._registry = registry
        self._endpoints: dict[str, Endpoint] = {}
        self._quarantine_seconds = quarantine_seconds
        self._quarantined: dict[str, float] = {}
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

    async def _follow(self) -> None:
        async for instances in self._registry.watch(self.service):
            self._apply(instances)

    def _apply(self, instances: Sequence[Instance]) -> None:
        current = {instance.instance_id: instance for instance in instances}
        for instance_id in list(self._endpoints):
            old = self._endpoints[instance_id]
            if current.get(instance_id) != old.instance:
                del self._endpoints[instance_id]
                self._quarantined.pop(instance_id, None)
                self._close_later(old)
        for instance_id, instance in current.items():
            if instance_id not in self._endpoints:
                self._endpoints[instance_id] = self._open(instance)
        self.balancer.update(list(self._endpoints.values()))
        if self._endpoints:
            self._has_endpoints.set()
        else:
            self._has_endpoints.clear()
        log.info("%s endpoints: %s", self.service, sorted(self._endpoints) or "none")

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

    def quarantine(self, endpoint: Endpoint) -> None:
        if endpoint.instance_id in self._endpoints:
            self._quarantined[endpoint.instance_id] = time.monotonic() + self._quarantine_seconds

    def pick(self, key: bytes | None, tried: Set[str] = NOTHING_EXCLUDED) -> Endpoint | None:
        """An endpoint not yet tried by this call, avoiding quarantined ones when possible."""
        if self._quarantined:
            now = time.monotonic()
            for instance_id, until in list(self._quarantined.items()):
                if until <= now:
                    del self._quarantined[instance_id]
            if self._quarantined:
                endpoint = self.balancer.pick(key, tried | self._quarantined.keys())
                if endpoint is not None:
                    return endpoint
        return self.balancer.pick(key, tried)

    async def wait_for_endpoints(self, timeout: float) -> bool:
        if self._has_endpoints.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._has_endpoints.wait(), timeout)
        return self._has_endpoints.is_set()

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        channels = [e.channel for e in self._endpoints.values() if e.channel is not None]
        self._endpoints.clear()
        await asyncio.gather(*(channel.close(grace=None) for channel in channels))
        for task in list(self._closing):
            task.cancel()
