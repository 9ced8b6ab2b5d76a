"""Every method of every service, fed hostile requests: never INTERNAL or UNKNOWN, never down.

Each service of the catalogue runs as a real `blueprint serve` process (on its own
PostgreSQL database when it keeps one). The sweep learns the methods from the server's
reflection, not from our stubs, and for each sends: every field at its extremes one at
a time (`support.hostile`), bytes that are not the request message, and random mixes
drawn by hypothesis. Any answer is fine but INTERNAL and UNKNOWN, which say the server
failed at something the client did; afterwards the process must still be up and
SERVING.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import HealthCheck, given, settings

from blueprint import catalog
from blueprint.infra.sql import migrations
from support import hostile
from support.mesh import ServerProcess, mesh_env, running
from support.postgres import postgres_or_skip

pytestmark = pytest.mark.redis

TIMEOUT_SECONDS = 2.0  # a legitimate slow request (Work 10 s) ends here: DEADLINE_EXCEEDED
RANDOM_EXAMPLES = 25  # per method, on top of the fixed cases
SERVER_FAILED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
NO_ANSWER = {grpc.StatusCode.DEADLINE_EXCEEDED}
# Methods whose job is to answer a status the caller chose: that one is no failure.
ASKED_FOR: dict[str, Callable[[Any], int]] = {
    "blueprint.diag.v1.Diagnostics.Fail": lambda request: int(request.code),
}


@pytest.fixture(params=list(catalog.SERVICES))
def server(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[ServerProcess]:
    service: str = request.param
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    env = mesh_env(redis_url, redis_prefix, BLUEPRINT_STATE_DIR=str(tmp_path / "state"))
    with _database(service, env), running(service, 1, env, log_dir) as (started,):
        yield started


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


@contextmanager
def _database(service: str, env: dict[str, str]) -> Iterator[None]:
    """A PostgreSQL database of its own, migrated, for a service that keeps one."""
    if not migrations.has_migrations(service):
        yield
        return
    with postgres_or_skip().databases(f"hostile_{service}") as (url,):
        env["BLUEPRINT_DATABASE_URL"] = url
        migrated = subprocess.run(
            [sys.executable, "-m", "blueprint.cli", "migrate", service],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stderr
        yield


def _methods(channel: grpc.Channel) -> list[descriptor.MethodDescriptor]:
    """Every method the server lists through reflection, with descriptors from it."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    return [
        method
        for name in database.get_services()
        for method in pool.FindServiceByName(name).methods
    ]


def _call(channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes) -> Any:
    """The status code the server answered (OK once it sent a reply); identity serializers,
    so any bytes go out as they are."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    argument: Any = iter([payload]) if method.client_streaming else payload
    try:
        if not method.server_streaming:
            unary = channel.stream_unary if method.client_streaming else channel.unary_unary
            unary(path)(argument, timeout=TIMEOUT_SECONDS)
            return grpc.StatusCode.OK
        streaming = channel.stream_stream if method.client_streaming else channel.unary_stream
        call = streaming(path)(argument, timeout=TIMEOUT_SECONDS)
        # The first reply proves the request was taken; some streams never end (Watch).
        next(call, None)
        call.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code(), error.details()


class _Sweep:
    """Sends requests to one method and keeps what it answered."""

    def __init__(self, channel: grpc.Channel, method: descriptor.MethodDescriptor) -> None:
        self.channel = channel
        self.method = method
        self.request_class = hostile.message_class(method.input_type)
        self.codes: Counter[grpc.StatusCode] = Counter()
        self.failures: list[str] = []

    def send(self, label: str, payload: bytes) -> str | None:
        """The failure, if the answer was one."""
        answer = _call(self.channel, self.method, payload)
        code, details = answer if isinstance(answer, tuple) else (answer, "")
        self.codes[code] += 1
        if code not in SERVER_FAILED or self._asked_for(payload) == code.value[0]:
            return None
        failure = f"{self.method.full_name} [{label}]: {code.name} {details!r}"
        self.failures.append(failure)
        return failure

    def _asked_for(self, payload: bytes) -> int | None:
        asked = ASKED_FOR.get(self.method.full_name)
        if asked is None:
            return None
        try:
            return asked(self.request_class.FromString(payload))
        except Exception:  # not a request at all: nothing was asked for
            return None


def _random_mixes(sweep: _Sweep) -> None:
    """Hypothesis draws the requests, and shrinks one that fails to its simplest form."""

    @settings(
        max_examples=RANDOM_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile.messages(sweep.method.input_type))
    def random_mix(request: Any) -> None:
        failure = sweep.send("random", request.SerializeToString())
        assert failure is None, f"{failure}\nrequest: {request}"

    random_mix()


def test_no_request_makes_a_service_fail_or_fall_over(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    sweeps = [_Sweep(channel, method) for method in _methods(channel)]
    assert sweeps, "reflection listed no methods"
    for sweep in sweeps:
        for label, request in hostile.one_field_at_a_time(sweep.method.input_type):
            sweep.send(label, request.SerializeToString())
        for label, raw in hostile.undecodable(sweep.method.input_type):
            sweep.send(label, raw)
        assert server.process.poll() is None, f"the server died during {sweep.method.full_name}"
    failures = [failure for sweep in sweeps for failure in sweep.failures]
    assert not failures, "\n".join(failures)
    for sweep in sweeps:
        _random_mixes(sweep)  # fails at the first failure, shrunk to its simplest request
        assert server.process.poll() is None, f"the server died during {sweep.method.full_name}"
    for sweep in sweeps:
        answered = sum(n for code, n in sweep.codes.items() if code not in NO_ANSWER)
        # Not a sweep of timeouts: most requests got an answer of substance.
        assert answered >= sum(sweep.codes.values()) / 2, (sweep.method.full_name, sweep.codes)
        assert sweep.codes[grpc.StatusCode.INVALID_ARGUMENT], (sweep.method.full_name, sweep.codes)
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
