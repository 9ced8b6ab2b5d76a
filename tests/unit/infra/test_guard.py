"""A store's guard: outages become StoreUnavailable, repeated ones open its breaker, and
an open breaker fails calls at once with how long to wait, without touching the store."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.exceptions as redis_errors
from prometheus_client import CollectorRegistry

from blueprint.errors import StoreUnavailable
from blueprint.infra.guard import StoreGuard, StoreGuards, StoreMetrics
from blueprint.infra.redis_client import RedisUnavailable
from blueprint.mesh.resilience.breaker import BreakerConfig, BreakerState

CONFIG = BreakerConfig(
    window=4, minimum_calls=2, failure_rate=0.5, open_seconds=5.0, half_open_probes=1
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _guard(
    clock: FakeClock,
    registry: CollectorRegistry | None = None,
    failure: type[StoreUnavailable] = StoreUnavailable,
) -> StoreGuard:
    metrics = StoreMetrics(registry) if registry else None
    guards = StoreGuards(CONFIG, metrics=metrics, clock=clock)
    return guards.guard("shop/shard-0/writer", ceiling_seconds=30.0, failure=failure)


async def _fail(guard: StoreGuard) -> StoreUnavailable:
    with pytest.raises(StoreUnavailable) as raised:
        async with guard.call():
            raise ConnectionResetError(104, "Connection reset by peer")
    return raised.value


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"dependency": "shop/shard-0/writer", **labels})


async def test_an_outage_becomes_store_unavailable_naming_the_dependency() -> None:
    failure = await _fail(_guard(FakeClock()))
    assert failure.dependency == "shop/shard-0/writer"
    assert isinstance(failure.__cause__, ConnectionResetError)
    assert failure.retry_after is None


async def test_repeated_outages_open_the_breaker_and_calls_fail_fast() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    guard = _guard(clock, registry)
    await _fail(guard)
    await _fail(guard)
    assert guard.state is BreakerState.OPEN
    clock.now += 1.0
    touched = False
    with pytest.raises(StoreUnavailable, match="circuit breaker open") as raised:
        async with guard.call():
            touched = True
    assert not touched
    assert raised.value.retry_after == pytest.approx(4.0)
    assert _metric(registry, "blueprint_store_breaker_state") == 2
    assert _metric(registry, "blueprint_store_breaker_rejections_total") == 1
    assert _metric(registry, "blueprint_store_outages_total") == 2
    assert _metric(registry, "blueprint_store_breaker_transitions_total", state="open") == 1


async def test_after_the_open_period_a_probe_that_succeeds_closes_it() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    guard = _guard(clock, registry)
    await _fail(guard)
    await _fail(guard)
    clock.now += 5.0
    async with guard.call():
        pass
    assert guard.state is BreakerState.CLOSED
    assert _metric(registry, "blueprint_store_breaker_state") == 0


async def test_a_refusal_from_the_store_is_an_answer_not_an_outage() -> None:
    guard = _guard(FakeClock())
    for _ in range(10):
        with pytest.raises(KeyError):
            async with guard.call():
                raise KeyError("duplicate key")
    assert guard.state is BreakerState.CLOSED


async def test_a_redis_guard_raises_an_error_redis_code_still_understands() -> None:
    guard = _guard(FakeClock(), failure=RedisUnavailable)
    with pytest.raises(redis_errors.RedisError) as raised:
        async with guard.call():
            raise redis_errors.TimeoutError("Timeout reading from socket")
    assert isinstance(raised.value, RedisUnavailable)
    assert isinstance(raised.value, StoreUnavailable)


async def test_a_call_over_its_deadline_is_an_outage() -> None:
    guard = _guard(FakeClock())
    with pytest.raises(StoreUnavailable, match="no answer within"):
        async with guard.call(until=time.monotonic() + 0.01):
            await asyncio.Event().wait()
