"""A redis-py asyncio client with its dependency's guard around every command.

`GuardedRedis` admits each command (and each pipeline's execute) through a
`StoreGuard`: bounded by the incoming call's deadline, failing at once while Redis's
breaker is open, and raising `RedisUnavailable` when Redis does not answer. That error
is a `StoreUnavailable` for domain code and still a redis-py `ConnectionError` for code
written against redis-py (`except RedisError`), so the cache, the queue and the id
leases keep their own handling.

redis-py has no hook around commands; `execute_command` is the one method every command
goes through (OpenTelemetry's instrumentation wraps the same one). Blocking reads longer
than the guard's ceiling (XREADGROUP BLOCK) do not belong on a guarded client.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline

from blueprint.errors import StoreUnavailable
from blueprint.infra.guard import StoreGuard, StoreGuards


class RedisUnavailable(StoreUnavailable, redis_errors.ConnectionError):
    """Redis did not answer, or its breaker is open."""


class GuardedRedis(aioredis.Redis):
    guard: StoreGuard

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        async with self.guard.call():
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = GuardedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.guard = self.guard
        return pipe


class GuardedPipeline(Pipeline):
    guard: StoreGuard

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        async with self.guard.call():
            return await super().execute(raise_on_error)


def guarded_redis(
    url: str,
    *,
    dependency: str,
    guards: StoreGuards,
    max_connections: int,
    timeout_seconds: float,
) -> GuardedRedis:
    """Bytes in and out, and a bounded pool: a burst waits up to `timeout_seconds` for a
    connection instead of opening thousands; commands time out after as long."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        health_check_interval=10,
    )
    client = GuardedRedis(connection_pool=pool)
    client.guard = guards.guard(
        dependency, ceiling_seconds=timeout_seconds, failure=RedisUnavailable
    )
    return client
