"""A channel-shaped router: generated stubs call it, and each call picks an endpoint.

grpcio accepts no load-balancing policy written in Python, so the mesh hands
stubs this object instead of a `grpc.aio.Channel`. Its multicallables pick an
endpoint per call, run the call on that endpoint's own warm channel, and feed
the balancer's load signal. An idempotent call that meets UNAVAILABLE (the
endpoint went away) is retried once on another endpoint.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from blueprint.mesh.endpoint import Endpoint
from blueprint.mesh.methods import is_idempotent
from blueprint.mesh.pool import EndpointPool

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None
Metadata = Any  # grpc.aio.Metadata or a sequence of (key, value) pairs


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None
    )


class CallRouter:
    """Per-target-service call logic shared by all multicallables of a MeshChannel."""

    def __init__(
        self,
        pool: EndpointPool,
        *,
        default_timeout: float,
        hash_key_header: str,
        own_address: bytes,
    ) -> None:
        self.pool = pool
        self._default_timeout = default_timeout
        self._hash_key_header = hash_key_header
        self._own_address = own_address
        self._wants_key = pool.balancer.name == "consistent_hash"

    def _key(self, metadata: Metadata | None) -> bytes | None:
        """Affinity key: the hash-key header if the caller set one, else the caller's address."""
        if not self._wants_key:
            return None
        for name, value in metadata or ():
            if name == self._hash_key_header:
                return value if isinstance(value, bytes) else str(value).encode()
        return self._own_address

    async def _pick(self, key: bytes | None, tried: set[str], deadline: float) -> Endpoint:
        endpoint = self.pool.pick(key, tried)
        if endpoint is not None:
            return endpoint
        if tried:
            raise _unavailable(f"no other endpoint of {self.pool.service!r} to retry on")
        # Startup or a full restart: wait for discovery, but never past the deadline.
        await self.pool.wait_for_endpoints(max(0.0, deadline - time.monotonic()))
        endpoint = self.pool.pick(key, tried)
        if endpoint is None:
            raise _unavailable(f"no endpoints registered for service {self.pool.service!r}")
        return endpoint

    async def unary(
        self,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        **call_options: Any,
    ) -> Any:
        """Unary-unary (retried once when idempotent) and stream-unary (never retried)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self._default_timeout)
        key = self._key(metadata)
        retryable = kind == "unary_unary" and is_idempotent(path)
        tried: set[str] = set()
        while True:
            endpoint = await self._pick(key, tried, deadline)
            multicallable = endpoint.calls.get(path)
            if multicallable is None:
                multicallable = self._bind(endpoint, kind, path, serializer, deserializer)
            load = endpoint.load
            load.start()
            started = time.monotonic()
            try:
                return await multicallable(
                    request,
                    timeout=max(0.0, deadline - started),
                    metadata=metadata,
                    **call_options,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                self.pool.quarantine(endpoint)
                if not retryable or tried:
                    raise
                tried.add(endpoint.instance_id)
            finally:
                load.finish(time.monotonic() - started)

    async def server_stream(
        self,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        **call_options: Any,
    ) -> AsyncIterator[Any]:
        """Unary-stream and stream-stream; an idempotent unary-stream call is retried
        on another endpoint only if UNAVAILABLE arrives before its first message."""
        deadline = time.monotonic() + (timeout if timeout is not None else self._default_timeout)
        key = self._key(metadata)
        retryable = kind == "unary_stream" and is_idempotent(path)
        tried: set[str] = set()
        while True:
            endpoint = await self._pick(key, tried, deadline)
            multicallable = endpoint.calls.get(path)
            if multicallable is None:
                multicallable = self._bind(endpoint, kind, path, serializer, deserializer)
            load = endpoint.load
            load.start()
            started = time.monotonic()
            received = False
            try:
                call = multicallable(
                    request,
                    timeout=max(0.0, deadline - started),
                    metadata=metadata,
                    **call_options,
                )
                async for response in call:
                    received = True
                    yield response
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                self.pool.quarantine(endpoint)
                if not retryable or received or tried:
                    raise
                tried.add(endpoint.instance_id)
            finally:
                load.finish(time.monotonic() - started)

    @staticmethod
    def _bind(
        endpoint: Endpoint,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
    ) -> Any:
        assert endpoint.channel is not None
        factory = getattr(endpoint.channel, kind)
        multicallable = factory(
            path,
            request_serializer=serializer,
            response_deserializer=deserializer,
            _registered_method=True,
        )
        endpoint.calls[path] = multicallable
        return multicallable


class _MultiCallable:
    """What a stub attribute (`stub.Echo`) is: a callable bound to one method path."""

    __slots__ = ("_deserializer", "_kind", "_path", "_router", "_serializer")

    def __init__(
        self,
        router: CallRouter,
        kind: str,
        path: str,
        serializer: Serializer,
        deserializer: Deserializer,
    ) -> None:
        self._router = router
        self._kind = kind
        self._path = path
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **call_options: Any,
    ) -> Any:
        invoke = self._router.unary if self._kind.endswith("_unary") else self._router.server_stream
        return invoke(
            self._kind,
            self._path,
            self._serializer,
            self._deserializer,
            request,
            timeout,
            metadata,
            **call_options,
        )


class MeshChannel:
    """Duck-types the part of `grpc.aio.Channel` that generated stubs use."""

    def __init__(self, router: CallRouter) -> None:
        self.router = router

    def _multicallable(
        self,
        kind: str,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> _MultiCallable:
        return _MultiCallable(self.router, kind, method, request_serializer, response_deserializer)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("unary_unary", method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("unary_stream", method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("stream_unary", method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _MultiCallable:
        return self._multicallable("stream_stream", method, *args, **kwargs)
