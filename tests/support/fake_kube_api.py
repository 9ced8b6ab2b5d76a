"""A local HTTP server speaking the Kubernetes list/watch protocol for EndpointSlices.

No cluster can run here, so discovery tests talk to this instead: the same
URLs, JSON and streaming the API server uses for
`GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`:

- a list answers an `EndpointSliceList` whose `metadata.resourceVersion` is the
  store's current version;
- `?watch=1&resourceVersion=N` replays every stored change after N, then streams
  new ones as newline-delimited JSON events (ADDED, MODIFIED, DELETED, and
  BOOKMARK when `allowWatchBookmarks` is set) with chunked transfer encoding,
  until `timeoutSeconds` runs out;
- a watch from a version older than the compacted history is answered, as the
  API server does, with an `ERROR` event carrying a `Status` with code 410, or
  (`gone_as_http=True`) with an HTTP 410 response.

`expire()` compacts the history and ends every open watch with that 410, the
way an etcd compaction does; the client must re-list.

Boolean query parameters (`watch`, `allowWatchBookmarks`) are read as the API
server reads them, with Go's strconv.ParseBool: 1/t/T/TRUE/true/True and their
false twins; anything else is a 400. With `tls=(cert, key)` it serves HTTPS, and
with `token` it answers 401 to a request without that bearer token, as a real API
server does for a pod's service account.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/apis/discovery.k8s.io/v1/namespaces/"
Object = dict[str, Any]

GONE_STATUS: Object = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "too old resource version",
    "reason": "Expired",
    "code": 410,
}


# Go's strconv.ParseBool, which the API server's query parameter decoding uses.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """strconv.ParseBool: ValueError for anything else (the API server answers 400)."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _status(code: int, reason: str, message: str) -> Object:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def endpoint(
    address: str,
    pod: str | None = None,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    node: str | None = None,
) -> Object:
    """One EndpointSlice endpoint; a condition left as None is absent from the JSON."""
    conditions = {
        name: value
        for name, value in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if value is not None
    }
    found: Object = {"addresses": [address], "conditions": conditions}
    if pod is not None:
        found["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "ignored"}
    if node is not None:
        found["nodeName"] = node
    return found


def endpoint_slice(
    name: str,
    service: str,
    endpoints: list[Object],
    *,
    ports: Mapping[str, int] | None = None,
    address_type: str = "IPv4",
    labels: Mapping[str, str] | None = None,
) -> Object:
    """An EndpointSlice as the EndpointSlice controller writes it for `service`."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "app.kubernetes.io/part-of": "blueprint",
                **(labels or {}),
            },
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [
            {"name": port_name, "port": port, "protocol": "TCP"}
            for port_name, port in (ports if ports is not None else {"grpc": 50051}).items()
        ],
    }


def _matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Equality-based label selectors (`a=b,c==d,e!=f`), the kind the mesh sends."""
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        else:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
    return True


@dataclass(frozen=True)
class Request:
    """What a client asked for: recorded so tests can check list vs watch and versions."""

    namespace: str
    query: dict[str, str]

    @property
    def is_watch(self) -> bool:
        try:
            return parse_bool(self.query.get("watch", "false"))
        except ValueError:
            return False


@dataclass
class _Event:
    version: int
    type: str
    object: Object
    namespace: str = ""


@dataclass
class _Store:
    """Slices keyed by (namespace, name), with the change history watches replay."""

    version: int = 1
    compacted: int = 1  # watches from versions older than this are 410 Gone
    slices: dict[tuple[str, str], Object] = field(default_factory=dict)
    history: list[_Event] = field(default_factory=list)
    epoch: int = 0  # bumped by expire(): open watches end with 410


class FakeKubeApi:
    """The fake API server; use as a context manager, point clients at `url`."""

    def __init__(
        self,
        *,
        gone_as_http: bool = False,
        tls: tuple[Path, Path] | None = None,
        token: str | None = None,
    ) -> None:
        self.gone_as_http = gone_as_http
        self.token = token
        self.requests: list[Request] = []
        self.fail_next: list[int] = []  # HTTP statuses to answer the next requests with
        self._store = _Store()
        self._changed = threading.Condition()
        self._closing = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- changing the store, as the EndpointSlice controller would -------------------------

    def apply(self, slice_: Object, namespace: str = "default", *, announce: bool = True) -> int:
        """Create or replace a slice; returns its new resourceVersion.

        `announce=False` leaves no event to watch, as if history had been
        compacted before a watcher saw it: only a list shows the change.
        """
        name = slice_["metadata"]["name"]
        with self._changed:
            store = self._store
            store.version += 1
            stored = json.loads(json.dumps(slice_))
            stored["metadata"].update(namespace=namespace, resourceVersion=str(store.version))
            kind = "MODIFIED" if (namespace, name) in store.slices else "ADDED"
            store.slices[(namespace, name)] = stored
            if announce:
                store.history.append(_Event(store.version, kind, stored, namespace))
            self._changed.notify_all()
            return store.version

    def delete(self, name: str, namespace: str = "default") -> int:
        with self._changed:
            store = self._store
            removed = store.slices.pop((namespace, name))
            store.version += 1
            gone = json.loads(json.dumps(removed))
            gone["metadata"]["resourceVersion"] = str(store.version)
            store.history.append(_Event(store.version, "DELETED", gone, namespace))
            self._changed.notify_all()
            return store.version

    def bookmark(self) -> int:
        """Advance the version with no change to any slice; watchers that asked get a BOOKMARK."""
        with self._changed:
            store = self._store
            store.version += 1
            marker: Object = {
                "kind": "EndpointSlice",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(store.version)},
            }
            store.history.append(_Event(store.version, "BOOKMARK", marker))
            self._changed.notify_all()
            return store.version

    def expire(self) -> None:
        """Compact all history: old versions are Gone, and open watches end.

        They end with an ERROR event carrying 410, as the API server sends; with
        `gone_as_http` the stream just closes (a dropped connection) and the
        client's re-watch from its old version gets an HTTP 410.
        """
        with self._changed:
            store = self._store
            store.version += 1
            store.compacted = store.version
            store.history.clear()
            store.epoch += 1
            self._changed.notify_all()

    def lists(self) -> list[Request]:
        return [r for r in self.requests if not r.is_watch]

    def watches(self) -> list[Request]:
        return [r for r in self.requests if r.is_watch]

    # -- serving ----------------------------------------------------------------------------

    def _list(self, namespace: str, selector: str) -> Object:
        with self._changed:
            items = [
                obj
                for (ns, _), obj in sorted(self._store.slices.items())
                if ns == namespace and _matches(selector, obj["metadata"].get("labels", {}))
            ]
            version = self._store.version
        return {
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": str(version)},
            "items": items,
        }

    def _watch_events(
        self, namespace: str, selector: str, since: int | None, bookmarks: bool, timeout: float
    ) -> Iterator[Object]:
        """Events for one watch request, in order, until it times out or history expires."""
        deadline = time.monotonic() + timeout
        with self._changed:
            store = self._store
            epoch = store.epoch
            if since is None:  # no version: the current state as synthetic ADDED events
                since = store.version
                initial = [
                    _Event(since, "ADDED", obj, ns) for (ns, _), obj in sorted(store.slices.items())
                ]
            elif since < store.compacted:
                yield {"type": "ERROR", "object": GONE_STATUS}
                return
            else:
                initial = []
        pending = iter(initial)
        while True:
            for event in pending:
                if event.type == "BOOKMARK":
                    if bookmarks:
                        yield {"type": "BOOKMARK", "object": event.object}
                elif event.namespace == namespace and _matches(
                    selector, event.object["metadata"].get("labels", {})
                ):
                    yield {"type": event.type, "object": event.object}
                since = max(since, event.version)
            with self._changed:
                while True:
                    if self._closing:
                        return
                    if self._store.epoch != epoch:
                        if not self.gone_as_http:
                            yield {"type": "ERROR", "object": GONE_STATUS}
                        return
                    fresh = [e for e in self._store.history if e.version > since]
                    if fresh:
                        pending = iter(fresh)
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(remaining)

    def _is_gone(self, since: int | None) -> bool:
        with self._changed:
            return since is not None and since < self._store.compacted

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None  # quiet: pytest shows failures, not every request

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                namespace, _, rest = parts.path.removeprefix(PREFIX).partition("/")
                if not parts.path.startswith(PREFIX) or rest != "endpointslices":
                    self._json(HTTPStatus.NOT_FOUND, {"kind": "Status", "code": 404})
                    return
                if api.token is not None:
                    scheme, _, given = self.headers.get("Authorization", "").partition(" ")
                    if scheme.lower() != "bearer" or given.strip() != api.token:
                        self._json(
                            HTTPStatus.UNAUTHORIZED, _status(401, "Unauthorized", "Unauthorized")
                        )
                        return
                try:
                    watch = parse_bool(query.get("watch", "false"))
                    bookmarks = parse_bool(query.get("allowWatchBookmarks", "false"))
                except ValueError as error:
                    self._json(HTTPStatus.BAD_REQUEST, _status(400, "BadRequest", str(error)))
                    return
                request = Request(namespace, query)
                api.requests.append(request)
                if api.fail_next:
                    code = api.fail_next.pop(0)
                    self._json(HTTPStatus(code), {"kind": "Status", "code": code})
                    return
                selector = query.get("labelSelector", "")
                if not watch:
                    self._json(HTTPStatus.OK, api._list(namespace, selector))
                    return
                version = query.get("resourceVersion")
                since = int(version) if version not in (None, "", "0") else None
                if api.gone_as_http and api._is_gone(since):
                    self._json(HTTPStatus.GONE, GONE_STATUS)
                    return
                self._stream(
                    api._watch_events(
                        namespace,
                        selector,
                        since,
                        bookmarks,
                        float(query.get("timeoutSeconds", "1800")),
                    )
                )

            def _json(self, status: HTTPStatus, body: Object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, events: Iterator[Object]) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in events:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped watching
                self.close_connection = True

        return Handler
