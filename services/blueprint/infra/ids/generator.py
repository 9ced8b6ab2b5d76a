"""A process's id maker: a leased worker id, kept alive, feeding a Snowflake."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from types import TracebackType
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from blueprint.errors import StoreUnavailable
from blueprint.infra.ids import base62
from blueprint.infra.ids.lease import NoWorkerIdFree, WorkerLease
from blueprint.infra.ids.snowflake import MsClock, Snowflake, wall_clock_ms

if TYPE_CHECKING:
    from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)


class WorkerLeaseLost(StoreUnavailable):
    """No worker id is held right now, so no id can be made safely (UNAVAILABLE: the
    lease comes back when Redis answers)."""

    def __init__(self, reason: str) -> None:
        super().__init__("ids (worker id lease in Redis)", reason)


class IdGenerator:
    """Unique, time-ordered 64-bit ids for this process; no coordination per id.

        async with IdGenerator(redis, key_prefix="blueprint:ids") as ids:
            link_id = await ids.next_id()

    Starting leases a worker id; a task renews it every third of the TTL. If the lease
    is lost (Redis unreachable past the TTL, the process paused), `next_id` raises
    `WorkerLeaseLost` until the task leases a worker id again, possibly another one;
    ids still only increase. Closing releases the worker id for the next process.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        lease_seconds: float = 10.0,
        max_backwards_ms: int = 1000,
        clock: MsClock = wall_clock_ms,
        rng: random.Random | None = None,
    ) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        if not key_prefix:
            raise ValueError("key_prefix must not be empty")
        self._redis = redis
        self._key_prefix = key_prefix
        self._lease_seconds = lease_seconds
        self._max_backwards_ms = max_backwards_ms
        self._clock = clock
        self._rng = rng or random.Random()
        self._lease: WorkerLease | None = None
        self._snowflake: Snowflake | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> IdGenerator:
        return cls(
            redis,
            key_prefix=f"{settings.redis_prefix}:ids",
            lease_seconds=settings.ids_lease_seconds,
            max_backwards_ms=settings.ids_max_clock_backwards_ms,
        )

    @property
    def worker_id(self) -> int | None:
        """The worker id held now; None while none is."""
        return self._lease.worker_id if self._lease is not None else None

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("this IdGenerator is closed")
        if self._renewer is not None:
            return
        await self._lease_worker_id()
        self._renewer = asyncio.create_task(self._keep_leased(), name="ids-lease-renewal")

    async def next_id(self) -> int:
        while True:
            lease, snowflake = self._lease, self._snowflake
            if self._closed:
                raise RuntimeError("this IdGenerator is closed")
            if lease is None or snowflake is None or not lease.held():
                raise WorkerLeaseLost(
                    "no worker id is leased (Redis unreachable or the lease expired); "
                    "ids resume once one is leased again"
                )
            # Checked and made with no await between: the id is made while the lease holds.
            made = snowflake.try_next()
            if isinstance(made, int):
                return made
            await asyncio.sleep(made.seconds)

    async def next_code(self, width: int = 0) -> str:
        """The next id in base62."""
        return base62.encode(await self.next_id(), width)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        lease, snowflake = self._lease, self._snowflake
        self._lease = None
        if lease is not None and snowflake is not None:
            try:
                await lease.release(snowflake.last_ms)
            except (RedisError, OSError) as error:
                # The lease expires by itself; its mark already covers the ids made.
                log.warning("ids: could not release worker id %d: %s", lease.worker_id, error)

    async def __aenter__(self) -> IdGenerator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _lease_worker_id(self) -> None:
        lease = await WorkerLease.acquire(
            self._redis,
            key_prefix=self._key_prefix,
            ttl_seconds=self._lease_seconds,
            rng=self._rng,
        )
        # After the worker id's previous use, and after our own last id if we had one.
        after_ms = max(lease.mark_ms, self._snowflake.last_ms if self._snowflake else 0)
        self._snowflake = Snowflake(
            lease.worker_id,
            after_ms=after_ms,
            max_backwards_ms=self._max_backwards_ms,
            clock=self._clock,
        )
        self._lease = lease

    async def _keep_leased(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                await self._renew_or_replace()
            except (RedisError, OSError, NoWorkerIdFree) as error:
                # Keep trying: the lease may still be ours when Redis answers again.
                log.warning("ids: worker id lease not renewed: %s", error)

    async def _renew_or_replace(self) -> None:
        lease, snowflake = self._lease, self._snowflake
        if lease is not None and snowflake is not None:
            usable_until = max(self._clock(), snowflake.last_ms) + round(self._lease_seconds * 1000)
            if await lease.renew(usable_until):
                return
            log.warning("ids: lost the lease on worker id %d; leasing another", lease.worker_id)
            self._lease = None
        await self._lease_worker_id()
