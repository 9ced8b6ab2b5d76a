"""Worker ids leased from Redis: no two live processes make ids with the same one.

A lease is `SET <prefix>:worker:<n> <token> NX PX <ttl>`: taken only if free, gone by
itself if its holder dies. The holder renews it well inside the TTL and deletes it when
done. Renewal and release are Lua scripts that act only while the key still holds the
holder's token, so a process that lost its lease (a long pause, Redis unreachable past
the TTL) never renews or frees another's.

Beside each lease, `<prefix>:worker:<n>:mark` is the latest millisecond the worker id
may have been used at. A new holder makes ids only after it, so even a holder whose
clock is behind its predecessor's cannot repeat an id: on release the mark is the last
millisecond used; on each renewal it is raised to the latest one usable before the
lease could expire (now + TTL), which covers a holder that dies without releasing.
"""

from __future__ import annotations

import random
import time
import uuid

from redis.asyncio import Redis

from blueprint.infra.ids.snowflake import MAX_WORKER_ID

# Extend the lease and raise the mark, only while the lease is still ours.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if tonumber(ARGV[3]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[3])
end
return 1
"""

# Ours: the mark becomes our exact last millisecond (dropping the renewal's margin) and
# the lease goes. Not ours: only raise the mark, which is always safe.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[1])
  return 1
end
if tonumber(ARGV[2]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 0
"""


class NoWorkerIdFree(RuntimeError):
    """All 1024 worker ids are leased by live processes."""


class WorkerLease:
    """One worker id, held in Redis until released or lost.

    `held()` is the holder's own, conservative view: true until the TTL, counted from
    when the last successful renewal was sent, has run out. Redis counts from when it
    received the command, a little later, so the holder stops first.
    """

    def __init__(
        self,
        redis: Redis,
        key_prefix: str,
        worker_id: int,
        token: str,
        ttl_seconds: float,
        valid_until: float,
        mark_ms: int,
    ) -> None:
        self.worker_id = worker_id
        self.mark_ms = mark_ms  # make ids only after this millisecond
        self.ttl_seconds = ttl_seconds
        self._redis = redis
        self._token = token
        self._keys = [_lease_key(key_prefix, worker_id), _mark_key(key_prefix, worker_id)]
        self._valid_until = valid_until
        self._lost = False
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @classmethod
    async def acquire(
        cls,
        redis: Redis,
        *,
        key_prefix: str,
        ttl_seconds: float,
        rng: random.Random | None = None,
    ) -> WorkerLease:
        """Lease a free worker id, trying the free ones in random order."""
        if not ttl_seconds > 0:
            raise ValueError(f"lease ttl_seconds must be > 0, got {ttl_seconds!r}")
        rng = rng or random.Random()
        token = uuid.uuid4().hex
        worker_ids = list(range(MAX_WORKER_ID + 1))
        # One round trip to see which are free, then SET NX settles any race for them.
        taken = await redis.mget([_lease_key(key_prefix, w) for w in worker_ids])
        free = [w for w, holder in zip(worker_ids, taken, strict=True) if holder is None]
        rng.shuffle(free)
        for worker_id in free:
            sent = time.monotonic()
            if await redis.set(
                _lease_key(key_prefix, worker_id), token, nx=True, px=_ms(ttl_seconds)
            ):
                mark = await redis.get(_mark_key(key_prefix, worker_id))
                return cls(
                    redis,
                    key_prefix,
                    worker_id,
                    token,
                    ttl_seconds,
                    valid_until=sent + ttl_seconds,
                    mark_ms=int(mark or 0),
                )
        raise NoWorkerIdFree(
            f"all {MAX_WORKER_ID + 1} worker ids under {key_prefix!r} are leased; "
            "more id-making processes than the id layout allows, or a wrong key prefix"
        )

    def held(self) -> bool:
        return not self._lost and time.monotonic() < self._valid_until

    async def renew(self, usable_until_ms: int) -> bool:
        """Extend the lease; False once it is lost (expired, or someone else's now).

        usable_until_ms: the latest millisecond this holder may use before the renewed
            lease could expire; it becomes the mark a successor must stay after.
        """
        if self._lost:
            return False
        sent = time.monotonic()
        renewed = await self._renew(
            keys=self._keys, args=[self._token, _ms(self.ttl_seconds), usable_until_ms]
        )
        if renewed:
            self._valid_until = sent + self.ttl_seconds
        else:
            self._lost = True
        return bool(renewed)

    async def release(self, last_ms: int) -> None:
        """Give the worker id back, recording the last millisecond used with it."""
        self._lost = True
        await self._release(keys=self._keys, args=[self._token, last_ms])


def _lease_key(prefix: str, worker_id: int) -> str:
    return f"{prefix}:worker:{worker_id}"


def _mark_key(prefix: str, worker_id: int) -> str:
    return f"{prefix}:worker:{worker_id}:mark"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
