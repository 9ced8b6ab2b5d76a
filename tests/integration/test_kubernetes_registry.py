"""The Kubernetes discovery backend against a local server speaking the list/watch protocol.

No Kubernetes cluster exists on this machine (none can be started here), so the
API server is `support.fake_kube_api.FakeKubeApi`: the real EndpointSlice URLs,
JSON, resourceVersions, chunked watch streams, bookmarks and 410 Gone. The
client side is the real one: the official `kubernetes` client, the registry,
and for the last tests real gRPC servers behind a real `MeshClient`.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from blueprint.diag.service import SPEC as DIAG
from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import Instance, KubernetesRegistry, open_registry
from blueprint.mesh.discovery.kubernetes import (
    api_client,
    instances_from_slices,
    jittered,
    usable,
    watch_timeout,
)
from blueprint.mesh.server import Runtime
from blueprint.mesh.settings import Settings
from support.fake_kube_api import FakeKubeApi, endpoint, endpoint_slice

# The bound: a client's view follows each change within a second.
WITHIN = 1.0
NS = "blueprint"


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as server:
        yield server


@pytest.fixture
async def registries() -> AsyncIterator[Callable[..., KubernetesRegistry]]:
    opened: list[KubernetesRegistry] = []

    def make(url: str, **options: Any) -> KubernetesRegistry:
        registry = KubernetesRegistry(api_client(url), namespace=NS, **options)
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        await registry.close()


async def _next(watch: AsyncIterator[list[Instance]]) -> list[Instance]:
    return await asyncio.wait_for(anext(watch), WITHIN)


def _ids(instances: list[Instance]) -> list[str]:
    return [instance.instance_id for instance in instances]


# -- which endpoints count -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"ready": True}, True),
        ({"ready": False}, False),
        ({"ready": True, "serving": True, "terminating": False}, True),
        ({"ready": False, "serving": True, "terminating": True}, False),  # draining pod
        ({"serving": True, "terminating": True}, False),  # never, even while serving
        ({"ready": True, "terminating": True}, False),
        ({"serving": True}, True),  # no `ready`: serving and not terminating
        ({"serving": False}, False),
        ({}, True),  # all unknown: the API says to assume ready
    ],
)
def test_only_ready_or_serving_non_terminating_endpoints_take_calls(
    conditions: dict[str, bool], expected: bool
) -> None:
    assert usable(conditions) is expected


@pytest.mark.parametrize(
    ("conditions", "listed"),
    [
        ({"ready": False}, True),  # not ready: listed, not serving
        ({"ready": False, "serving": True, "terminating": True}, False),
        ({}, True),
    ],
)
def test_terminating_endpoints_leave_the_view_and_not_ready_ones_stay_marked(
    conditions: dict[str, bool], listed: bool
) -> None:
    slices = [
        endpoint_slice(
            "diag-a", "diag", [{**endpoint("10.0.0.1", "diag-1"), "conditions": conditions}]
        )
    ]
    found = instances_from_slices("diag", slices, "grpc")
    assert [i.instance_id for i in found] == (["diag-1"] if listed else [])
    assert all(i.serving is usable(conditions) for i in found)


def test_slices_of_one_service_merge_into_one_instance_per_pod() -> None:
    ports = {"metrics": 9090, "grpc": 50051}
    slices = [
        endpoint_slice("diag-v4", "diag", [endpoint("10.0.0.1", "diag-1")], ports=ports),
        endpoint_slice(
            "diag-v6",
            "diag",
            [endpoint("fd00::1", "diag-1"), endpoint("fd00::2", "diag-2", node="node-b")],
            ports=ports,
            address_type="IPv6",
        ),
        endpoint_slice("diag-x", "diag", [endpoint("10.0.0.3")], ports={"grpc": 6000}),
        endpoint_slice("diag-noport", "diag", [endpoint("10.0.0.4", "diag-4")], ports={"x": 1}),
    ]
    assert instances_from_slices("diag", slices, "grpc") == [
        Instance("diag", "10.0.0.3", "10.0.0.3:6000"),  # no targetRef: the address names it
        Instance("diag", "diag-1", "10.0.0.1:50051"),  # dual-stack pod: once, over IPv4
        Instance("diag", "diag-2", "[fd00::2]:50051", metadata={"node": "node-b"}),
    ]


# -- following a Service through list + watch ----------------------------------------------


async def test_the_watch_follows_endpoints_added_not_ready_terminating_and_removed(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> None:
    api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
    api.apply(endpoint_slice("other-abc", "other", [endpoint("10.0.9.9", "other-1")]), NS)
    watch = registries(api.url).watch("diag")
    try:
        assert await _next(watch) == [Instance("diag", "diag-1", "10.0.0.1:50051")]

        # added: in a second slice of the same Service
        api.apply(endpoint_slice("diag-def", "diag", [endpoint("10.0.0.2", "diag-2")]), NS)
        assert _ids(await _next(watch)) == ["diag-1", "diag-2"]

        # made not ready (its readiness probe failed: a hard dependency is down): still
        # listed, as not serving, so clients route around it but keep it in view
        api.apply(
            endpoint_slice("diag-def", "diag", [endpoint("10.0.0.2", "diag-2", ready=False)]), NS
        )
        assert await _next(watch) == [
            Instance("diag", "diag-1", "10.0.0.1:50051"),
            Instance("diag", "diag-2", "10.0.0.2:50051", serving=False),
        ]

        api.apply(endpoint_slice("diag-def", "diag", [endpoint("10.0.0.2", "diag-2")]), NS)
        assert _ids(await _next(watch)) == ["diag-1", "diag-2"]

        # terminating: still serving its in-flight calls, so no `ready` but `serving`
        draining = endpoint("10.0.0.2", "diag-2", ready=None, serving=True, terminating=True)
        api.apply(endpoint_slice("diag-def", "diag", [draining]), NS)
        assert _ids(await _next(watch)) == ["diag-1"]

        # removed: the slice goes away
        api.delete("diag-def", NS)
        api.apply(endpoint_slice("diag-abc", "diag", []), NS)
        assert await _next(watch) == []
    finally:
        await watch.aclose()


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
async def test_an_expired_watch_relists_and_catches_up(
    gone_as_http: bool, registries: Callable[..., KubernetesRegistry]
) -> None:
    with FakeKubeApi(gone_as_http=gone_as_http) as api:
        api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
        watch = registries(api.url).watch("diag")
        try:
            assert _ids(await _next(watch)) == ["diag-1"]
            # Changes whose events were compacted away: only a fresh list shows them.
            api.apply(
                endpoint_slice("diag-def", "diag", [endpoint("10.0.0.2", "diag-2")]),
                NS,
                announce=False,
            )
            api.apply(endpoint_slice("diag-abc", "diag", []), NS, announce=False)
            api.expire()
            assert _ids(await _next(watch)) == ["diag-2"]
            assert len(api.lists()) == 2
            # ...and the watch goes on from the new list's version.
            api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
            assert _ids(await _next(watch)) == ["diag-1", "diag-2"]
        finally:
            await watch.aclose()


async def test_watches_resume_from_the_last_resource_version_with_bookmarks(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> None:
    listed = api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
    watch = registries(api.url, watch_timeout_seconds=1).watch("diag")
    try:
        assert _ids(await _next(watch)) == ["diag-1"]
        marked = api.bookmark()
        await _wait(lambda: len(api.watches()) >= 2, timeout=5)  # the first watch timed out
        first, second = api.watches()[:2]
        assert first.query["resourceVersion"] == str(listed)
        assert first.query["allowWatchBookmarks"] == "true"
        assert second.query["resourceVersion"] == str(marked)
        assert len(api.lists()) == 1  # resumed, not re-listed
        api.apply(endpoint_slice("diag-def", "diag", [endpoint("10.0.0.2", "diag-2")]), NS)
        assert _ids(await _next(watch)) == ["diag-1", "diag-2"]
    finally:
        await watch.aclose()


async def test_api_errors_are_retried_with_backoff(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> None:
    api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
    api.fail_next = [500, 503, 403]  # a failing list, then a failing watch, and so on
    watch = registries(api.url).watch("diag")
    try:
        assert _ids(await asyncio.wait_for(anext(watch), 10)) == ["diag-1"]
        api.apply(endpoint_slice("diag-def", "diag", [endpoint("10.0.0.2", "diag-2")]), NS)
        assert _ids(await asyncio.wait_for(anext(watch), 10)) == ["diag-1", "diag-2"]
        assert api.fail_next == []
    finally:
        await watch.aclose()


def test_waits_and_watch_timeouts_are_jittered_like_client_go() -> None:
    rng = random.Random(7)
    timeouts = [watch_timeout(300, rng) for _ in range(50)]
    assert all(300 <= t < 600 for t in timeouts)
    assert len(set(timeouts)) > 10  # spread, not one moment for every pod
    delays = [jittered(0.2, rng) for _ in range(50)]
    assert all(0.2 <= d < 0.4 for d in delays)
    assert len(set(delays)) == 50


async def test_pods_watching_together_ask_for_different_watch_timeouts(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> None:
    api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
    watches = [
        registries(api.url, rng=random.Random(seed)).watch("diag") for seed in range(5)
    ]  # five pods, as after an API server restart
    try:
        for watch in watches:
            assert _ids(await _next(watch)) == ["diag-1"]
        await _wait(lambda: len(api.watches()) >= 5, timeout=5)
        asked = [int(r.query["timeoutSeconds"]) for r in api.watches()]
        assert all(300 <= t < 600 for t in asked)
        assert len(set(asked)) > 1
    finally:
        for watch in watches:
            await watch.aclose()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


GO_BOOLEANS = [
    ("1", True),
    ("True", True),
    ("t", True),
    ("false", False),
    ("0", False),
    ("F", False),
]


@pytest.mark.parametrize(("value", "watch"), GO_BOOLEANS)
def test_the_fake_api_reads_booleans_like_go(api: FakeKubeApi, value: str, watch: bool) -> None:
    url = f"{api.url}/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
    code, _ = _get(f"{url}?watch={value}&timeoutSeconds=0")
    assert code == 200
    assert api.requests[-1].is_watch is watch


def test_the_fake_api_refuses_what_go_cannot_parse(api: FakeKubeApi) -> None:
    url = f"{api.url}/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
    code, body = _get(f"{url}?watch=yes")
    assert code == 400
    assert "ParseBool" in body


@pytest.fixture
def service_account(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """A pod's mounted service account (token, ca.crt), and the API server's key pair."""
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    cert, key = tmp_path / "apiserver.crt", tmp_path / "apiserver.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=kube-apiserver",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (mounted / "ca.crt").write_bytes(cert.read_bytes())
    (mounted / "token").write_text("service-account-token-1")
    (mounted / "namespace").write_text(NS)
    yield mounted, cert, key


async def test_in_a_pod_the_api_is_reached_with_the_mounted_token_and_ca(
    service_account: tuple[Path, Path, Path],
) -> None:
    mounted, cert, key = service_account
    with FakeKubeApi(tls=(cert, key), token="service-account-token-1") as api:
        api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
        environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        client = api_client(None, service_account_dir=mounted, environ=environ)
        assert client.configuration.host == f"https://127.0.0.1:{api.port}"
        registry = KubernetesRegistry(client, namespace=NS)
        try:
            assert _ids(await registry.instances("diag")) == ["diag-1"]
            watch = registry.watch("diag")
            assert _ids(await _next(watch)) == ["diag-1"]  # list + watch, over TLS
            await watch.aclose()
        finally:
            await registry.close()

        (mounted / "token").write_text("a-token-the-server-does-not-know")
        stranger = KubernetesRegistry(
            api_client(None, service_account_dir=mounted, environ=environ), namespace=NS
        )
        try:
            with pytest.raises(ApiException) as refused:
                await stranger.instances("diag")
            assert refused.value.status == 401
        finally:
            await stranger.close()


def test_a_client_without_the_mounted_ca_does_not_trust_the_api(
    service_account: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, cert, key = service_account
    other = tmp_path / "other"
    other.mkdir()
    (other / "token").write_text("service-account-token-1")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp_path / "other.key"), "-out", str(other / "ca.crt"),
         "-subj", "/CN=someone-else"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with FakeKubeApi(tls=(cert, key), token="service-account-token-1") as api:
        environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        client = api_client(None, service_account_dir=other, environ=environ)
        registry = KubernetesRegistry(client, namespace=NS)
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(registry.instances("diag"))
        asyncio.run(registry.close())
        assert api.requests == []  # nothing got through the handshake


# -- the rest of the Registry contract -----------------------------------------------------


async def test_instances_and_services_are_read_from_the_slices(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> None:
    api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
    api.apply(
        endpoint_slice("diag-preview-abc", "diag-preview", [endpoint("10.0.1.1", "diag-g")]), NS
    )
    api.apply(endpoint_slice("idle-abc", "idle", [endpoint("10.0.2.1", "i", ready=False)]), NS)
    foreign = endpoint_slice("db-abc", "db", [endpoint("10.0.3.1", "db-0")])
    del foreign["metadata"]["labels"]["app.kubernetes.io/part-of"]
    api.apply(foreign, NS)
    api.apply(endpoint_slice("diag-abc", "elsewhere", [endpoint("10.9.0.1", "x")]), "other-ns")
    registry = registries(api.url)
    assert await registry.instances("diag") == [Instance("diag", "diag-1", "10.0.0.1:50051")]
    assert await registry.instances("nobody") == []
    # "idle" has a pod that is not ready: listed (status shows it NOT_SERVING), not used.
    assert await registry.services() == ["diag", "diag-preview", "idle"]


async def test_registering_changes_nothing_as_the_kubelet_owns_membership(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> None:
    registry = registries(api.url)
    await registry.register(Instance("diag", "diag-1", "10.0.0.1:50051"))
    assert await registry.instances("diag") == []
    await registry.deregister(Instance("diag", "diag-1", "10.0.0.1:50051"))
    assert all(not r.is_watch for r in api.requests)  # only the one list above


async def test_open_registry_builds_it_from_settings(api: FakeKubeApi) -> None:
    api.apply(endpoint_slice("diag-abc", "diag", [endpoint("10.0.0.1", "diag-1")]), NS)
    settings = Settings(discovery="kubernetes", kubernetes_api_url=api.url, kubernetes_namespace=NS)
    registry = open_registry(settings)
    try:
        assert isinstance(registry, KubernetesRegistry)
        assert _ids(await registry.instances("diag")) == ["diag-1"]
    finally:
        await registry.close()


async def test_close_stops_open_watches_promptly(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> None:
    registry = registries(api.url)
    watches = [registry.watch("diag"), registry.watch("other")]
    for watch in watches:
        assert await _next(watch) == []
    assert _follower_threads()
    # A hang guard, not a timing claim: close must not wait out the 300 s watch timeout.
    await asyncio.wait_for(registry.close(), 10)
    assert not _follower_threads()
    for watch in watches:
        await watch.aclose()


def _follower_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kubernetes discovery")]


async def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- real calls through the mesh -----------------------------------------------------------


@pytest.fixture
async def pods(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry]
) -> AsyncIterator[dict[str, Runtime]]:
    """Three real diag servers, named like pods (their BLUEPRINT_INSTANCE_ID)."""
    registry = registries(api.url)
    settings = Settings(
        discovery="kubernetes",
        kubernetes_api_url=api.url,
        kubernetes_namespace=NS,
        propagation_seconds=0,
        drain_grace_seconds=1,
    )
    started: dict[str, Runtime] = {}
    for pod in ("diag-7c9f-a", "diag-7c9f-b", "diag-7c9f-c"):
        runtime = Runtime(
            DIAG, settings.model_copy(update={"instance_id": pod}), registry, owns_registry=False
        )
        await runtime.start()  # registers: a no-op here, the slice below is what counts
        started[pod] = runtime
    yield started
    for runtime in started.values():
        await runtime.stop()


Conditions = dict[str, bool | None]
DRAINING: Conditions = {"ready": False, "serving": True, "terminating": True}  # after SIGTERM
NOT_READY: Conditions = {"ready": False}  # its readiness probe fails


async def test_calls_follow_the_slices_and_never_reach_a_terminating_pod(
    api: FakeKubeApi, registries: Callable[..., KubernetesRegistry], pods: dict[str, Runtime]
) -> None:
    def publish(conditions: dict[str, Conditions] | None = None, gone: str = "") -> None:
        # One slice per pod: the pods share 127.0.0.1, so each needs its own port.
        for pod, runtime in pods.items():
            if pod == gone:
                continue
            found = (conditions or {}).get(pod, {})
            ready, serving, terminating = (
                found.get("ready", True),
                found.get("serving"),
                found.get("terminating"),
            )
            api.apply(
                endpoint_slice(
                    f"diag-{pod[-1]}",
                    "diag",
                    [
                        endpoint(
                            "127.0.0.1", pod, ready=ready, serving=serving, terminating=terminating
                        )
                    ],
                    ports={"grpc": runtime.port},
                ),
                NS,
            )

    publish()
    mesh = MeshClient(Settings(discovery="kubernetes", balancer="round_robin"), registries(api.url))
    try:
        stub = mesh.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        pool = mesh.router("diag").pool

        def in_view() -> set[str]:
            return {endpoint.instance_id for endpoint in pool.endpoints}

        async def served(calls: int) -> set[str]:
            replies = [await stub.Echo(diag_pb2.EchoRequest(payload="x")) for _ in range(calls)]
            return {reply.instance_id for reply in replies}

        await _wait(lambda: in_view() == set(pods), WITHIN)
        assert await served(30) == set(pods)

        # diag-7c9f-b is asked to stop: its server still answers while it drains.
        publish({"diag-7c9f-b": DRAINING})
        await _wait(lambda: in_view() == {"diag-7c9f-a", "diag-7c9f-c"}, WITHIN)
        assert await served(60) == {"diag-7c9f-a", "diag-7c9f-c"}

        # `ready` absent, `serving` true, `terminating` true: still never used.
        publish({"diag-7c9f-b": {"serving": True, "terminating": True}})
        await asyncio.sleep(0.2)
        assert await served(60) == {"diag-7c9f-a", "diag-7c9f-c"}

        def serving() -> set[str]:
            return {e.instance_id for e in pool.endpoints if pool.serving(e)}

        # diag-7c9f-c fails its readiness probe: kept in view, not serving, so no calls;
        # diag-7c9f-b's slice goes away.
        publish({"diag-7c9f-c": NOT_READY}, gone="diag-7c9f-b")
        api.delete("diag-b", NS)
        await _wait(lambda: in_view() == {"diag-7c9f-a", "diag-7c9f-c"}, WITHIN)
        await _wait(lambda: serving() == {"diag-7c9f-a"}, WITHIN)
        assert await served(20) == {"diag-7c9f-a"}

        # diag-7c9f-c is ready again: calls come back to it.
        publish(gone="diag-7c9f-b")
        await _wait(lambda: serving() == {"diag-7c9f-a", "diag-7c9f-c"}, WITHIN)
        assert await served(20) == {"diag-7c9f-a", "diag-7c9f-c"}
    finally:
        await mesh.close()
