"""Unique ids without a round trip per id: Snowflake ids on leased worker ids, base62 codes.

async with IdGenerator.from_settings(settings, redis) as ids:
    link_id = await ids.next_id()         # 64-bit, time-ordered, unique across processes
    code = base62.encode(link_id)         # "7kTq0xA2Bc"; base62.decode(code) == link_id
"""

from __future__ import annotations

from blueprint.infra.ids import base62
from blueprint.infra.ids.generator import IdGenerator, WorkerLeaseLost
from blueprint.infra.ids.lease import NoWorkerIdFree, WorkerLease
from blueprint.infra.ids.snowflake import (
    EPOCH_MS,
    ClockMovedBackwards,
    IdParts,
    Snowflake,
    compose,
    decompose,
)

__all__ = [
    "EPOCH_MS",
    "ClockMovedBackwards",
    "IdGenerator",
    "IdParts",
    "NoWorkerIdFree",
    "Snowflake",
    "WorkerLease",
    "WorkerLeaseLost",
    "base62",
    "compose",
    "decompose",
]
