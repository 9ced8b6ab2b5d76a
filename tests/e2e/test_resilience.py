"""The client's resilience against real misbehaving processes.

- a replica answering UNAVAILABLE half the time: callers see no errors, and
  retries stay within the retry budget (counted by the servers themselves);
- a replica answering UNAVAILABLE always: the budget caps the extra load;
- a replica that hangs (SIGSTOP): its breaker opens, traffic moves away, and
  after SIGCONT half-open probes close the breaker again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.resilience.breaker import BreakerState
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry.metrics import Metrics
from support.load import closed_loop
from support.mesh import ServerProcess, mesh_env, running, start_server
from support.mesh import stop as stop_servers
from support.scrape import sample_sum
from support.waiting import eventually

ECHO = {"rpc_method": "blueprint.diag.v1.Diagnostics/Echo"}
BUDGET_RATIO, BUDGET_FLOOR_PER_SECOND, BUDGET_WINDOW = 0.2, 5.0, 10


async def _client(
    redis_url: str, redis_prefix: str, **overrides: Any
) -> tuple[MeshClient, RedisRegistry, Metrics]:
    settings = Settings(
        discovery="redis",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        balancer="round_robin",
        retry_budget_ratio=BUDGET_RATIO,
        retry_budget_min_per_second=BUDGET_FLOOR_PER_SECOND,
        **overrides,
    )
    registry = RedisRegistry.from_url(
        redis_url, prefix=redis_prefix, lease_ttl_seconds=3, resync_seconds=0.25
    )
    metrics = Metrics(CollectorRegistry())
    return MeshClient(settings, registry, metrics=metrics), registry, metrics


def _server_calls(servers: list[ServerProcess], **labels: str) -> float:
    return sum(
        sample_sum(s.metrics_port, "rpc_server_call_duration_seconds_count", {**ECHO, **labels})
        for s in servers
    )


@pytest.fixture
async def close_later() -> AsyncIterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        await thing.close()


async def test_a_half_failing_replica_costs_callers_nothing_within_the_retry_budget(
    redis_url: str, redis_prefix: str, log_dir: Path, close_later: list[Any]
) -> None:
    env = mesh_env(redis_url, redis_prefix)
    flaky_env = {**env, "BLUEPRINT_DIAG_FAILURE_RATE": "0.5"}
    with running("diag", 2, env, log_dir) as steady:
        flaky = start_server("diag", "diag-flaky", flaky_env, log_dir)
        try:
            client, registry, metrics = await _client(redis_url, redis_prefix)
            close_later += [client, registry]
            assert await client.wait_for_endpoints("diag", 5)
            pool = client.router("diag").pool
            await eventually(lambda: len(pool.endpoints) == 3, 5, "3 endpoints discovered")
            stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)

            async def echo() -> str:
                return (await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)).instance_id

            stop = asyncio.Event()
            started = time.monotonic()
            load = asyncio.create_task(closed_loop(echo, stop, concurrency=8))
            await asyncio.sleep(3)
            stop.set()
            result = await load
            seconds = time.monotonic() - started
            servers = [*steady, flaky]
            seen = _server_calls(servers)
            refused = _server_calls([flaky], rpc_response_status_code="UNAVAILABLE")
        finally:
            stop_servers([flaky])

    assert result.failures == [], [f.code() for f in result.failures[:3]]
    assert refused > 0, "the flaky replica was never tried"
    retries = seen - result.calls
    assert retries == metrics.registry.get_sample_value(
        "blueprint_mesh_retries_total", {"target": "diag", "reason": "UNAVAILABLE"}
    )
    # The budget: a share of the calls in its window plus a floor for the window.
    assert seconds < BUDGET_WINDOW
    floor = BUDGET_FLOOR_PER_SECOND * BUDGET_WINDOW
    assert retries <= BUDGET_RATIO * result.calls + floor, (retries, result.calls)


async def test_the_retry_budget_caps_the_load_on_a_failing_service(
    redis_url: str, redis_prefix: str, log_dir: Path, close_later: list[Any]
) -> None:
    env = mesh_env(redis_url, redis_prefix, BLUEPRINT_DIAG_FAILURE_RATE="1")
    with running("diag", 1, env, log_dir) as servers:
        client, registry, metrics = await _client(redis_url, redis_prefix, max_attempts=3)
        close_later += [client, registry]
        assert await client.wait_for_endpoints("diag", 5)
        stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        calls = 300
        started = time.monotonic()
        for _ in range(calls):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        seconds = time.monotonic() - started
        seen = _server_calls(servers)

    # Without a budget, 3 attempts per call would put 900 calls on the server.
    assert seconds < BUDGET_WINDOW
    floor = BUDGET_FLOOR_PER_SECOND * BUDGET_WINDOW
    assert calls < seen <= calls * (1 + BUDGET_RATIO) + floor, seen
    exhausted = metrics.registry.get_sample_value(
        "blueprint_mesh_retry_budget_exhausted_total", {"target": "diag"}
    )
    assert exhausted is not None and exhausted > 0


async def test_a_hanging_replica_trips_its_breaker_and_probes_close_it_after_recovery(
    redis_url: str, redis_prefix: str, log_dir: Path, close_later: list[Any]
) -> None:
    # A lease longer than the hang: discovery keeps the stopped replica listed, so
    # it is the breaker, not discovery, that moves the traffic.
    env = mesh_env(redis_url, redis_prefix, BLUEPRINT_LEASE_TTL_SECONDS="30")
    with running("diag", 3, env, log_dir) as servers:
        client, registry, metrics = await _client(
            redis_url,
            redis_prefix,
            breaker_window=10,
            breaker_open_seconds=1.0,
            breaker_half_open_probes=2,
            ejection_consecutive_failures=10_000,  # isolate the breaker from ejection
        )
        close_later += [client, registry]
        pool = client.router("diag").pool
        await eventually(lambda: len(pool.endpoints) == 3, 5, "3 endpoints discovered")
        stub = client.stub("diag", diag_pb2_grpc.DiagnosticsStub)
        hung = servers[0]
        (hung_endpoint,) = [e for e in pool.endpoints if e.instance_id == hung.instance_id]
        breaker = pool.health(hung_endpoint).breaker

        async def echo() -> str:
            return (await stub.Echo(diag_pb2.EchoRequest(payload="x"), timeout=0.3)).instance_id

        stop = asyncio.Event()
        load = asyncio.create_task(closed_loop(echo, stop, concurrency=6))
        try:
            await asyncio.sleep(0.5)
            hung.process.send_signal(signal.SIGSTOP)
            await eventually(lambda: breaker.state is BreakerState.OPEN, 5, "breaker opens")

            def picks_of_hung() -> float:
                value = metrics.registry.get_sample_value(
                    "blueprint_mesh_picks_total",
                    {"target": "diag", "endpoint": hung.instance_id, "balancer": "round_robin"},
                )
                return value or 0.0

            before, window_started = picks_of_hung(), time.monotonic()
            await asyncio.sleep(2.0)
            moved_picks = picks_of_hung() - before
            periods = (time.monotonic() - window_started) / 1.0 + 1
            # Open: no calls; each half-open period lets at most 2 probes through.
            assert moved_picks <= 2 * periods, moved_picks

            hung.process.send_signal(signal.SIGCONT)
            await eventually(lambda: breaker.state is BreakerState.CLOSED, 10, "breaker closes")
            recovered_from = picks_of_hung()
            await asyncio.sleep(0.5)
            assert picks_of_hung() > recovered_from  # traffic came back
        finally:
            hung.process.send_signal(signal.SIGCONT)
            stop.set()
            result = await load
    transitions = [
        metrics.registry.get_sample_value(
            "blueprint_mesh_breaker_transitions_total",
            {"target": "diag", "endpoint": hung.instance_id, "state": state},
        )
        for state in ("open", "half_open", "closed")
    ]
    assert all(t and t >= 1 for t in transitions), transitions
    assert result.served_by[hung.instance_id] > 0
