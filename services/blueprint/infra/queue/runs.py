"""One run of a message id at a time in a consumer group, across consumers and processes.

The processed marker only tells a consumer what the group has already committed. Two
entries of one message id (a publisher sending it twice, a retry racing a redelivery)
read by two consumers at once would both find no marker and both run. So before a
consumer runs a message it takes the id's run key (SET NX, owner = consumer name, expiring
after the visibility timeout and renewed with the entry's claim); a consumer that finds
the key held by another waits for that run's outcome, after which the marker says
"duplicate" or, if the run failed, the key is free to take. Each outcome frees the key
in the same MULTI as the acknowledgement; a crashed consumer's key expires as its entries
become claimable.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import redis.asyncio as aioredis

from blueprint.infra.queue.keys import QueueKeys

# KEYS: marker, run key, marker, run key, ... ARGV: consumer, run key life (ms).
# Returns a RunState per message id.
_TAKE = """
local states = {}
for i = 1, #KEYS, 2 do
  local state = 2
  if redis.call('EXISTS', KEYS[i]) == 1 then
    state = 0
  elseif redis.call('SET', KEYS[i + 1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    state = 1
  elseif redis.call('GET', KEYS[i + 1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])  -- ours already (a restart under one name)
    state = 1
  end
  states[#states + 1] = state
end
return states
"""

# KEYS: run keys. ARGV: consumer, run key life (ms). Extends the ones still ours;
# returns a Held per key.
_RENEW = """
local states = {}
for i = 1, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  local state = 0
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    state = 1
  elseif owner then
    state = 2
  end
  states[#states + 1] = state
end
return states
"""

# KEYS: run keys. ARGV: consumer. Frees the ones still ours, never another's.
_RELEASE = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""


class RunState(IntEnum):
    DONE = 0  # the group committed it: a duplicate
    OURS = 1  # taken by this consumer: run it
    BUSY = 2  # another consumer is running it: wait for its outcome


class Held(IntEnum):
    """What a renewal found: a claim (of an entry, of a run) is renewed only while ours."""

    GONE = 0  # settled (by us, normally): nothing left to renew
    OURS = 1  # renewed
    OTHER = 2  # another consumer took it over


class Runs:
    def __init__(
        self, redis: aioredis.Redis, keys: QueueKeys, group: str, consumer: str, *, life_ms: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._consumer = consumer
        self._life_ms = max(1, life_ms)
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def take(self, message_ids: Sequence[str]) -> list[RunState]:
        """For each id: already committed, now ours to run, or running elsewhere (one call)."""
        if not message_ids:
            return []
        keys = [k for mid in message_ids for k in (self._marker(mid), self._run(mid))]
        states = await self._take(keys=keys, args=[self._consumer, self._life_ms])
        return [RunState(int(s)) for s in states]

    async def settled(self, message_ids: Sequence[str]) -> bool:
        """Whether every id is committed or run by no one now (one MGET)."""
        if not message_ids:
            return True
        markers = [self._marker(mid) for mid in message_ids]
        runs = [self._run(mid) for mid in message_ids]
        values = await self._redis.mget([*markers, *runs])
        n = len(message_ids)
        return all(values[i] is not None or values[n + i] is None for i in range(n))

    async def renew(self, message_ids: Sequence[str]) -> list[Held]:
        """Extend our runs of these ids; for each, whether it was still ours."""
        if not message_ids:
            return []
        runs = [self._run(mid) for mid in message_ids]
        states = await self._renew(keys=runs, args=[self._consumer, self._life_ms])
        return [Held(int(state)) for state in states]

    async def release(self, tx: aioredis.client.Pipeline, message_ids: Sequence[str]) -> None:
        """Free our runs of these ids as part of `tx` (an outcome's MULTI)."""
        if message_ids:
            runs = [self._run(mid) for mid in message_ids]
            await self._release(keys=runs, args=[self._consumer], client=tx)

    def _marker(self, mid: str) -> str:
        return self._keys.processed(self._group, mid)

    def _run(self, mid: str) -> str:
        return self._keys.running(self._group, mid)
