"""Hash sharding by key: even spread, stable placement, little movement when a shard joins."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from blueprint.infra.sql import Database, ShardedDatabase, create_engine
from blueprint.mesh.settings import Settings

KEYS = [f"link-{n}" for n in range(20_000)]

MakeShards = Callable[[int], Awaitable[ShardedDatabase]]


@pytest.fixture
async def make_shards() -> AsyncIterator[MakeShards]:
    made: list[ShardedDatabase] = []

    async def make(count: int) -> ShardedDatabase:
        # In-memory engines connect only when used, and these are never used.
        sharded = ShardedDatabase(
            [Database(create_engine("sqlite://"), name=f"s{i}") for i in range(count)]
        )
        made.append(sharded)
        return sharded

    yield make
    for sharded in made:
        await sharded.dispose()


async def test_keys_spread_evenly_over_the_shards(make_shards: MakeShards) -> None:
    sharded = await make_shards(4)
    counts = Counter(sharded.index_for_key(key) for key in KEYS)
    assert sorted(counts) == [0, 1, 2, 3]
    fair = len(KEYS) / 4
    # 160 virtual nodes per shard: shares within about 8 %; 25 % leaves room for the hash.
    assert all(abs(count - fair) < 0.25 * fair for count in counts.values()), counts


async def test_a_key_lands_on_the_same_shard_in_every_process(make_shards: MakeShards) -> None:
    one, other = await make_shards(5), await make_shards(5)
    assert [one.index_for_key(k) for k in KEYS[:2000]] == [
        other.index_for_key(k) for k in KEYS[:2000]
    ]
    assert one.for_key("abc") is one.for_key(b"abc")
    # Pinned: placement must not change between releases, or rows become unreachable.
    assert [one.index_for_key(k) for k in ("a", "b", "c", "3D7", "hello")] == [3, 0, 3, 0, 1]


async def test_adding_a_shard_moves_only_the_keys_it_takes(make_shards: MakeShards) -> None:
    before, after = await make_shards(4), await make_shards(5)
    moved = [k for k in KEYS if before.index_for_key(k) != after.index_for_key(k)]
    assert all(after.index_for_key(k) == 4 for k in moved)  # only to the new shard
    assert 0.12 < len(moved) / len(KEYS) < 0.28  # about 1/5, not the ~4/5 of hash % N


async def test_one_shard_takes_every_key(make_shards: MakeShards) -> None:
    sharded = await make_shards(1)
    assert {sharded.index_for_key(k) for k in KEYS[:100]} == {0}


@pytest.mark.parametrize(
    ("key", "error", "message"),
    [("", ValueError, "empty"), (b"", ValueError, "empty"), (42, TypeError, "str or bytes")],
)
async def test_bad_keys_are_refused(
    make_shards: MakeShards, key: object, error: type[Exception], message: str
) -> None:
    sharded = await make_shards(2)
    with pytest.raises(error, match=message):
        sharded.for_key(key)  # type: ignore[arg-type]


def test_no_shards_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        ShardedDatabase([])


async def test_shards_and_their_replicas_come_from_settings() -> None:
    settings = Settings(
        database_shard_urls=["postgresql://u@s0.invalid/l", "postgresql://u@s1.invalid/l"],
        database_shard_replica_urls=[["postgresql://u@s0r.invalid/l"]],
    )
    sharded = ShardedDatabase.from_settings(settings, "shortener")
    try:
        assert len(sharded) == 2
        assert [s.writer.url.host for s in sharded.shards] == ["s0.invalid", "s1.invalid"]
        assert [len(s.replicas) for s in sharded.shards] == [1, 0]
        assert sharded.shards[1].name == "shortener/shard-1"
    finally:
        await sharded.dispose()


async def test_without_shard_urls_the_service_database_is_the_one_shard() -> None:
    settings = Settings(database_url="postgresql://u@main.invalid/l")
    sharded = ShardedDatabase.from_settings(settings, "shortener")
    try:
        assert len(sharded) == 1
        assert sharded.for_key("x").writer.url.host == "main.invalid"
    finally:
        await sharded.dispose()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            Settings(
                database_shard_urls=["postgresql://u@s0.invalid/l"],
                database_shard_replica_urls=[["postgresql://u@r.invalid/l"], ["x"]],
            ),
            "replicas for 2 shards",
        ),
        (
            Settings(database_shard_replica_urls=[["postgresql://u@r.invalid/l"]]),
            "needs BLUEPRINT_DATABASE_SHARD_URLS",
        ),
        (
            Settings(database_shard_urls=["postgresql://u@s0.invalid/l", "redis://x"]),
            "unsupported scheme 'redis'",
        ),
    ],
)
def test_inconsistent_shard_settings_are_refused(settings: Settings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShardedDatabase.from_settings(settings, "shortener")
