"""Hash sharding: a table split across N databases, a key always on the same one.

The guide's `hash(key) % shards` moves nearly every key when a shard is added; a
consistent-hash ring moves only the keys the new shard takes (about 1/N). The ring is
the mesh's (`ConsistentHash`, ketama-style virtual nodes, blake2b positions so every
process agrees): shards stand in as its endpoints, named by position (`shard-0`, …).
Shard identity is that position, so new shards are appended to the list, never
inserted; the rows a new shard takes over must be copied to it before it serves.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from blueprint.infra.guard import StoreGuards
from blueprint.infra.sql.database import Database
from blueprint.infra.sql.engines import EngineOptions
from blueprint.mesh.balancers.consistent_hash import ConsistentHash
from blueprint.mesh.balancers.load import PendingRequests
from blueprint.mesh.discovery.base import Instance
from blueprint.mesh.endpoint import Endpoint

if TYPE_CHECKING:
    from blueprint.mesh.settings import Settings

# ketama's 160 points per shard: each shard's share varies by roughly 1/sqrt(160) (~8 %).
VIRTUAL_NODES = 160


def shard_name(index: int) -> str:
    return f"shard-{index}"


class ShardedDatabase:
    """Databases that each hold the rows of some keys; `for_key` says which."""

    def __init__(self, shards: Sequence[Database], *, virtual_nodes: int = VIRTUAL_NODES) -> None:
        if not shards:
            raise ValueError("a sharded database needs at least one shard")
        self.shards = tuple(shards)
        # The ring is only asked with a key, so its random choice for keyless calls is unused.
        self._ring = ConsistentHash(virtual_nodes, random.Random(0))
        self._ring.update(
            [
                Endpoint(Instance("shards", shard_name(i), shard_name(i)), PendingRequests())
                for i in range(len(self.shards))
            ]
        )
        self._index_of = {shard_name(i): i for i in range(len(self.shards))}

    @classmethod
    def from_settings(
        cls, settings: Settings, service: str, *, guards: StoreGuards | None = None
    ) -> ShardedDatabase:
        """Shards from `database_shard_urls`; none set: one shard, `Database.from_settings`.
        `guards` makes each engine's breaker (default: the default policy, no metrics)."""
        writers = settings.database_shard_urls
        replicas = settings.database_shard_replica_urls
        if not writers:
            if replicas:
                raise ValueError(
                    "BLUEPRINT_DATABASE_SHARD_REPLICA_URLS needs BLUEPRINT_DATABASE_SHARD_URLS"
                )
            return cls([Database.from_settings(settings, service, guards=guards)])
        if len(replicas) > len(writers):
            raise ValueError(
                f"BLUEPRINT_DATABASE_SHARD_REPLICA_URLS lists replicas for {len(replicas)} "
                f"shards, but BLUEPRINT_DATABASE_SHARD_URLS has only {len(writers)}"
            )
        options = EngineOptions.from_settings(settings)
        return cls(
            [
                Database.from_urls(
                    writer,
                    replicas[i] if i < len(replicas) else (),
                    options=options,
                    read_your_writes_seconds=settings.read_your_writes_seconds,
                    replica_retry_seconds=settings.database_replica_retry_seconds,
                    name=f"{service}/{shard_name(i)}",
                    guards=guards,
                )
                for i, writer in enumerate(writers)
            ]
        )

    def index_for_key(self, key: str | bytes) -> int:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes):
            raise TypeError(f"shard key must be str or bytes, got {type(key).__name__}")
        if not key:
            raise ValueError("shard key must not be empty")
        owner = self._ring.pick(key)
        assert owner is not None  # the ring has at least one shard
        return self._index_of[owner.instance_id]

    def for_key(self, key: str | bytes) -> Database:
        """The shard that holds `key`'s rows: the same one for every process, every time."""
        return self.shards[self.index_for_key(key)]

    async def dispose(self) -> None:
        for shard in self.shards:
            await shard.dispose()

    def __len__(self) -> int:
        return len(self.shards)

    def __repr__(self) -> str:
        return f"ShardedDatabase({list(self.shards)!r})"
