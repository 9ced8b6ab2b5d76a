"""Kubernetes discovery: follow a Service's EndpointSlices with the official client.

In a cluster the kubelet and the EndpointSlice controller own membership: a pod
is an endpoint of its Service while its gRPC readiness probe passes, and turns
`terminating` once asked to stop. So `register`/`deregister` do nothing here,
and a client follows the slices labelled `kubernetes.io/service-name=<service>`.

The official client is synchronous, so each `watch` runs list-then-watch in a
daemon thread and hands whole snapshots to the event loop with
`call_soon_threadsafe`: a blocking HTTP stream cannot be cancelled from asyncio
anyway, and `Watch.stop()` (which shuts the socket) ends it promptly on close.
Watches resume from the last resourceVersion (bookmarks keep it fresh), re-list
at once on 410 Gone, back off on other errors, and re-list every
`relist_seconds` as a safety net against a missed event.

Like client-go's reflectors, each watch asks the server to end it after a random
time between `watch_timeout_seconds` and twice that, and each back-off is
stretched by a random share of up to 100 %: after an API server restart every
pod's watch breaks at once, and without the jitter they would all come back at
once, and again at the same moment every timeout after that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import config
from kubernetes.client import ApiClient, Configuration, DiscoveryV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader
from kubernetes.watch import Watch

from blueprint.mesh.discovery.base import Instance, Registry
from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# The chart labels every Service so; the EndpointSlice controller copies
# Service labels onto the slices, so one slice list answers `services()`
# with nothing but the EndpointSlice RBAC the chart already grants.
PART_OF_SELECTOR = "app.kubernetes.io/part-of=blueprint"
# What the kubelet mounts into a pod with automountServiceAccountToken: the token
# (rotated in place; the client re-reads it every minute), the CA and the namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
NAMESPACE_FILE = SERVICE_ACCOUNT_DIR / "namespace"

HTTP_GONE = 410
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a list must not hang a caller
READ_SLACK_SECONDS = 15.0  # a watch's read timeout: the server's timeout plus this
INITIAL_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 10.0
# A watch that ends this fast having delivered nothing is treated as a failure,
# so an API server that closes streams at once is not hammered in a loop.
MIN_QUIET_WATCH_SECONDS = 1.0
# client-go's jitter factor: a wait of d becomes a random one in [d, d * (1 + JITTER)).
JITTER = 1.0


def jittered(seconds: float, rng: random.Random) -> float:
    """`seconds`, stretched by a random share of up to JITTER (client-go's wait.Jitter)."""
    return seconds * (1.0 + JITTER * rng.random())


def watch_timeout(minimum_seconds: int, rng: random.Random) -> int:
    """A watch's server-side timeout: between the minimum and twice it, as client-go's
    reflector picks (5 to 10 minutes there), so watches opened together end apart."""
    return int(jittered(minimum_seconds, rng))


Slice = Mapping[str, Any]  # an EndpointSlice as the API's JSON


def usable(conditions: Mapping[str, Any]) -> bool:
    """Whether an endpoint may take new calls.

    A terminating pod keeps `serving: true` while it drains its in-flight
    calls; new calls must not go there. An absent condition means "unknown",
    which the API says to read as ready (or serving) and not terminating.
    """
    if conditions.get("terminating") is True:
        return False
    ready = conditions.get("ready")
    if ready is not None:
        return ready is True
    return conditions.get("serving") is not False


def alive(conditions: Mapping[str, Any]) -> bool:
    """Whether an endpoint is a running pod, ready or not: not terminating.

    A pod whose readiness fails (a hard dependency down) stays in the view, marked not
    serving: clients route around it, but when every pod fails readiness at once (a
    shared database down) they still have somewhere to send calls, and an empty view
    is never mistaken for one (`view_guard.py`).
    """
    return conditions.get("terminating") is not True


def instances_from_slices(service: str, slices: Iterable[Slice], port_name: str) -> list[Instance]:
    """The live endpoints of every slice of `service`, one instance per pod; those not
    ready are marked not serving."""
    found: dict[str, Instance] = {}
    # IPv4 slices first, so a dual-stack pod (in one slice per family) is dialled over IPv4.
    for slice_ in sorted(slices, key=_preference):
        port = _port(slice_, port_name)
        if port is None:
            continue
        for endpoint in slice_.get("endpoints") or ():
            addresses = endpoint.get("addresses") or ()
            conditions = endpoint.get("conditions") or {}
            if not addresses or not alive(conditions):
                continue
            address = addresses[0]  # the API: addresses are fungible, use the first
            instance_id = (endpoint.get("targetRef") or {}).get("name") or address
            found.setdefault(
                instance_id,
                Instance(
                    service,
                    instance_id,
                    _host_port(address, port),
                    metadata=_metadata(endpoint),
                    serving=usable(conditions),
                ),
            )
    return sorted(found.values(), key=lambda i: i.instance_id)


def _preference(slice_: Slice) -> tuple[bool, str]:
    return slice_.get("addressType") != "IPv4", str(slice_.get("metadata", {}).get("name", ""))


def _port(slice_: Slice, port_name: str) -> int | None:
    for port in slice_.get("ports") or ():
        if (port.get("name") or "") == port_name and port.get("port") is not None:
            return int(port["port"])
    return None


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _metadata(endpoint: Mapping[str, Any]) -> dict[str, str]:
    # Only what is stable for the pod's life: a changed Instance reopens its channel.
    fields = (("node", endpoint.get("nodeName")), ("zone", endpoint.get("zone")))
    return {name: str(value) for name, value in fields if value}


def pod_namespace() -> str:
    """The namespace this pod runs in, else "default" (as kubectl assumes)."""
    try:
        return NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def api_client(
    api_url: str | None,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] = os.environ,
) -> ApiClient:
    """`api_url` without auth (tests, `kubectl proxy`), else in-cluster, else kubeconfig.

    In a pod: the API server at KUBERNETES_SERVICE_HOST/PORT over TLS checked against
    the mounted CA, with the mounted token, re-read as the kubelet rotates it.
    """
    configuration = Configuration()
    if api_url:
        configuration.host = api_url.rstrip("/")
        return ApiClient(configuration)
    loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=str(service_account_dir / "token"),
        cert_filename=str(service_account_dir / "ca.crt"),
        environ=environ,
    )
    try:
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        try:  # a developer's machine: `blueprint status` against their current context
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (ConfigException, OSError) as exc:
            raise RuntimeError(
                "kubernetes discovery: not in a pod and no usable kubeconfig; "
                "set BLUEPRINT_KUBERNETES_API_URL"
            ) from exc
    return ApiClient(configuration)


def _list(api: DiscoveryV1Api, namespace: str, selector: str) -> dict[str, Any]:
    # Raw JSON, not models: the watch hands out raw objects too, so one shape throughout.
    # Without preloading the client returns the urllib3 response, not the annotated model.
    response: Any = api.list_namespaced_endpoint_slice(
        namespace,
        label_selector=selector,
        _preload_content=False,
        _request_timeout=REQUEST_TIMEOUT,
    )
    body: dict[str, Any] = json.loads(response.data)
    return body


class _SliceFollower:
    """One service's slices, kept current by list + watch in a thread of its own."""

    def __init__(
        self,
        api: DiscoveryV1Api,
        namespace: str,
        service: str,
        port_name: str,
        publish: Callable[[list[Instance]], None],
        *,
        watch_timeout_seconds: int,
        relist_seconds: float,
        rng: random.Random,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._service = service
        self._selector = f"{SERVICE_NAME_LABEL}={service}"
        self._port_name = port_name
        self._publish = publish
        self._watch_timeout = watch_timeout_seconds
        self._relist_seconds = relist_seconds
        self._rng = rng
        self._slices: dict[str, Slice] = {}
        self._version: str | None = None  # None: the next step is a list
        self._listed_at = 0.0
        self._published: list[Instance] | None = None
        self._stopping = threading.Event()
        self._watch = Watch()  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(
            target=self._run, name=f"kubernetes discovery {service}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread, waiting at most `timeout` (it is a daemon if it outlives that)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            # Repeated: a stream that had not opened its response yet missed the last one.
            self._watch.stop()  # type: ignore[no-untyped-call]
            self._thread.join(0.05)

    def _run(self) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        while not self._stopping.is_set():
            try:
                if self._version is None or self._relist_due():
                    self._relist()
                started = time.monotonic()
                events = self._watch_once()
                if events or time.monotonic() - started >= MIN_QUIET_WATCH_SECONDS:
                    backoff = INITIAL_BACKOFF_SECONDS
                    continue
                log.warning("watch of %s slices closed at once, empty; retrying", self._service)
            except ApiException as exc:
                if exc.status == HTTP_GONE:
                    log.info("watch of %s slices expired (410); re-listing", self._service)
                    self._version = None
                    continue
                log.warning(
                    "following %s slices failed: %s %s", self._service, exc.status, exc.reason
                )
            except Exception as exc:  # the thread must outlive any one failure
                if self._stopping.is_set():
                    break
                log.warning("following %s slices failed: %r", self._service, exc)
            self._stopping.wait(jittered(backoff, self._rng))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _relist_due(self) -> bool:
        return time.monotonic() - self._listed_at >= self._relist_seconds

    def _relist(self) -> None:
        body = _list(self._api, self._namespace, self._selector)
        self._slices = {item["metadata"]["name"]: item for item in body.get("items") or ()}
        self._version = body["metadata"]["resourceVersion"]
        self._listed_at = time.monotonic()
        self._deliver()

    def _watch_once(self) -> int:
        """Follow one watch stream until it ends; the number of events it carried."""
        events = 0
        timeout = watch_timeout(self._watch_timeout, self._rng)
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self._api.list_namespaced_endpoint_slice,
            self._namespace,
            label_selector=self._selector,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=(REQUEST_TIMEOUT[0], timeout + READ_SLACK_SECONDS),
        )
        # An ERROR event arrives as ApiException (status 410 when expired),
        # because a watch with timeout_seconds never retries by itself.
        for event in stream:
            if self._stopping.is_set():
                break
            events += 1
            self._apply(event["type"], event["raw_object"])
            if self._relist_due():
                break
        return events

    def _apply(self, kind: str, obj: Slice) -> None:
        metadata = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            self._slices[metadata["name"]] = obj
        elif kind == "DELETED":
            self._slices.pop(metadata.get("name", ""), None)
        if metadata.get("resourceVersion"):
            self._version = metadata["resourceVersion"]
        if kind != "BOOKMARK":
            self._deliver()

    def _deliver(self) -> None:
        snapshot = instances_from_slices(self._service, self._slices.values(), self._port_name)
        if snapshot == self._published:
            return
        self._published = snapshot
        try:
            self._publish(snapshot)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self._stopping.set()


class KubernetesRegistry(Registry):
    """Instances are the usable endpoints of the Service named after the service."""

    def __init__(
        self,
        client: ApiClient,
        *,
        namespace: str,
        port_name: str = "grpc",
        watch_timeout_seconds: int = 300,
        relist_seconds: float = 600.0,
        stop_seconds: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        """Defaults: the API server ends each watch after a random 300-600 s
        (`watch_timeout_seconds` to twice that, client-go's reflectors' 5-10 minutes),
        and a full list every `relist_seconds` bounds how long a missed event could go
        unnoticed. `rng` draws the jitter (seed it in tests).
        """
        if watch_timeout_seconds < 1 or relist_seconds <= 0:
            raise ValueError("watch_timeout_seconds must be >= 1 and relist_seconds > 0")
        self._client = client
        self._api = DiscoveryV1Api(client)
        self._namespace = namespace
        self._port_name = port_name
        self._watch_timeout = watch_timeout_seconds
        self._relist_seconds = relist_seconds
        self._stop_seconds = stop_seconds
        self._rng = rng or random.Random()
        self._followers: set[_SliceFollower] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRegistry:
        return cls(
            api_client(settings.kubernetes_api_url),
            namespace=settings.kubernetes_namespace or pod_namespace(),
            port_name=settings.kubernetes_port_name,
        )

    @property
    def namespace(self) -> str:
        return self._namespace

    async def register(self, instance: Instance) -> None:
        log.debug(
            "kubernetes discovery: %s joins through its readiness probe, not by registering",
            instance.instance_id,
        )

    async def deregister(self, instance: Instance) -> None:
        log.debug(
            "kubernetes discovery: %s leaves as its pod terminates, not by deregistering",
            instance.instance_id,
        )

    async def instances(self, service: str) -> list[Instance]:
        body = await asyncio.to_thread(
            _list, self._api, self._namespace, f"{SERVICE_NAME_LABEL}={service}"
        )
        return instances_from_slices(service, body.get("items") or (), self._port_name)

    async def services(self) -> list[str]:
        body = await asyncio.to_thread(_list, self._api, self._namespace, PART_OF_SELECTOR)
        by_service: dict[str, list[Slice]] = defaultdict(list)
        for item in body.get("items") or ():
            name = (item["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
            if name:
                by_service[name].append(item)
        return sorted(
            name
            for name, slices in by_service.items()
            if instances_from_slices(name, slices, self._port_name)
        )

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        latest: list[Instance] = []

        def receive(snapshot: list[Instance]) -> None:
            nonlocal latest
            latest = snapshot
            changed.set()

        def publish(snapshot: list[Instance]) -> None:  # runs in the follower's thread
            loop.call_soon_threadsafe(receive, snapshot)

        follower = _SliceFollower(
            self._api,
            self._namespace,
            service,
            self._port_name,
            publish,
            watch_timeout_seconds=self._watch_timeout,
            relist_seconds=self._relist_seconds,
            rng=random.Random(self._rng.random()),  # one per thread: Random is not shared
        )
        self._followers.add(follower)
        follower.start()
        try:
            while True:
                await changed.wait()
                changed.clear()
                yield latest
        finally:
            self._followers.discard(follower)
            await asyncio.to_thread(follower.stop, self._stop_seconds)

    async def close(self) -> None:
        followers = list(self._followers)
        self._followers.clear()
        await asyncio.gather(
            *(asyncio.to_thread(follower.stop, self._stop_seconds) for follower in followers)
        )
        await asyncio.to_thread(self._client.close)
