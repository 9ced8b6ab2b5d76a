"""A guarded Redis client against a real redis-server that is stopped or goes silent:
its failures are StoreUnavailable (and still redis-py errors), repeated ones open its
breaker, and a silent server costs a call no more than the call's deadline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.exceptions as redis_errors
from prometheus_client import CollectorRegistry

from blueprint.errors import StoreUnavailable
from blueprint.infra.guard import StoreGuards, StoreMetrics
from blueprint.infra.redis_client import GuardedRedis, RedisUnavailable, guarded_redis
from blueprint.local.embedded_redis import EmbeddedRedis
from blueprint.mesh.resilience import deadlines
from blueprint.mesh.resilience.breaker import BreakerConfig, BreakerState
from support.tcp_proxy import TcpProxy

BREAKER = BreakerConfig(window=6, minimum_calls=3, open_seconds=30.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path / "redis")
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def _client(url: str, registry: CollectorRegistry | None = None) -> GuardedRedis:
    metrics = StoreMetrics(registry) if registry is not None else None
    return guarded_redis(
        url,
        dependency="test/redis",
        guards=StoreGuards(BREAKER, metrics=metrics),
        max_connections=8,
        timeout_seconds=5.0,
    )


async def test_a_stopped_redis_server_is_unavailable_then_fails_fast(
    server: EmbeddedRedis,
) -> None:
    registry = CollectorRegistry()
    client = _client(server.url, registry)
    try:
        await client.set("k", b"v")
        async with client.pipeline() as pipe:
            pipe.get("k")
            assert await pipe.execute() == [b"v"]
        server.stop()
        with pytest.raises(RedisUnavailable) as down:
            await client.get("k")
        assert isinstance(down.value, StoreUnavailable)
        assert isinstance(down.value, redis_errors.RedisError)  # redis-py code still copes
        assert down.value.dependency == "test/redis"
        while client.guard.state is not BreakerState.OPEN:
            with pytest.raises(RedisUnavailable):
                async with client.pipeline() as pipe:
                    pipe.get("k")
                    await pipe.execute()
        with pytest.raises(RedisUnavailable, match="circuit breaker open") as refused:
            await client.get("k")
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        labels = {"dependency": "test/redis"}
        assert registry.get_sample_value("blueprint_store_breaker_state", labels) == 2
        assert registry.get_sample_value("blueprint_store_breaker_rejections_total", labels) == 1
    finally:
        await client.aclose()
        await client.connection_pool.disconnect()


async def test_a_silent_redis_costs_a_call_no_more_than_its_deadline(
    server: EmbeddedRedis,
) -> None:
    async with TcpProxy("127.0.0.1", server.port) as proxy:
        client = _client(f"redis://127.0.0.1:{proxy.port}/0")
        try:
            await client.set("k", b"v")
            proxy.blackhole()
            token = deadlines.set_incoming(1.0)  # as inside a gRPC call with 1 s left
            try:
                with pytest.raises(RedisUnavailable, match="no answer within") as silent:
                    await client.get("k")
            finally:
                deadlines.reset_incoming(token)
            # The call's deadline cut it, not the client's 5 s socket timeout.
            assert silent.value.reason.startswith("StoreTimeout")
        finally:
            await client.aclose()
            await client.connection_pool.disconnect()
