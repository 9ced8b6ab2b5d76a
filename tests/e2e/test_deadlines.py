"""A caller's deadline travels with the call: each hop gets what is left, and the last
hop stops working when it runs out (real processes, real gRPC deadlines)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from support.mesh import ServerProcess, mesh_env, start_server, stop
from support.scrape import sample_sum

HOPS = ("hop-a", "hop-b", "hop-c")
RELAY = "blueprint.diag.v1.Diagnostics/Relay"


@pytest.fixture
def hops(redis_url: str, redis_prefix: str, log_dir: Path) -> Iterator[list[ServerProcess]]:
    servers = []
    try:
        for hop in HOPS:
            env = mesh_env(redis_url, redis_prefix, BLUEPRINT_REGISTER_AS=hop)
            servers.append(start_server("diag", f"{hop}-1", env, log_dir))
        yield servers
    finally:
        stop(servers)


def _relay(address: str, work_ms: int, timeout: float) -> diag_pb2.RelayResponse:
    # A plain grpcio client: the deadline is the caller's own, set on the wire.
    with grpc.insecure_channel(address) as channel:
        request = diag_pb2.RelayRequest(route=["hop-b", "hop-c"])
        request.work.FromMilliseconds(work_ms)
        reply: diag_pb2.RelayResponse = diag_pb2_grpc.DiagnosticsStub(channel).Relay(
            request, timeout=timeout
        )
        return reply


def test_each_hop_gets_less_of_the_callers_deadline(hops: list[ServerProcess]) -> None:
    _relay(hops[0].address, 0, timeout=5)  # warm the channels between hops
    reply = _relay(hops[0].address, 0, timeout=0.2)
    remaining = [h.deadline_remaining.ToNanoseconds() / 1e9 for h in reply.hops]
    assert [h.service for h in reply.hops] == list(HOPS)
    # gRPC rounds the caller's 200 ms up a little on the wire; from there each hop
    # passes on strictly less, so the third hop has less than the caller gave.
    assert 0 < remaining[2] < remaining[1] < remaining[0] <= 0.205, remaining
    assert remaining[2] < 0.2


def test_the_last_hop_stops_working_when_the_deadline_expires(hops: list[ServerProcess]) -> None:
    _relay(hops[0].address, 0, timeout=5)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        _relay(hops[0].address, 5_000, timeout=0.2)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5  # the caller did not wait for the work
    last = hops[2]

    # The last hop either stopped its work when its own deadline ran out, well before the
    # 5 s, or (on a slow machine, with the 200 ms spent on the way) never started it: a
    # call that cannot finish in time is not started (DEADLINE_EXCEEDED; on a busy server
    # shed with RESOURCE_EXHAUSTED, so its caller backs off).
    def ended() -> float:
        return sum(
            sample_sum(
                last.metrics_port,
                "rpc_server_call_duration_seconds_count",
                {"rpc_method": RELAY, "rpc_response_status_code": code},
            )
            for code in ("DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
        )

    deadline = time.monotonic() + 5
    while ended() < 1:
        assert time.monotonic() < deadline, last.log()
        time.sleep(0.05)
    never_started = sum(
        sample_sum(last.metrics_port, name)
        for name in ("blueprint_admission_expired_total", "blueprint_admission_shed_total")
    )
    assert never_started >= 1 or "relay work stopped" in last.log(), last.log()
    assert all(s.process.poll() is None for s in hops)
