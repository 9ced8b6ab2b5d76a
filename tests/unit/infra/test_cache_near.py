"""The in-process near cache: LRU-bounded, TTL-limited."""

from __future__ import annotations

import pytest

from blueprint.infra.cache.near import NearCache


def test_serves_until_its_expiry_then_forgets() -> None:
    near: NearCache[str] = NearCache(10)
    near.put("k", "v", expires_at=10.0)
    assert near.get("k", now=9.99) == (True, "v")
    assert near.get("k", now=10.0) == (False, None)
    assert len(near) == 0


def test_a_cached_none_is_found() -> None:
    near: NearCache[str | None] = NearCache(10)
    near.put("absent", None, expires_at=10.0)
    assert near.get("absent", now=0.0) == (True, None)
    assert near.get("other", now=0.0) == (False, None)


def test_evicts_the_least_recently_used_beyond_its_bound() -> None:
    near: NearCache[int] = NearCache(3)
    for n in range(3):
        near.put(f"k{n}", n, expires_at=100.0)
    near.get("k0", now=0.0)  # k0 is hot now; k1 is the coldest
    near.put("k3", 3, expires_at=100.0)
    assert len(near) == 3
    assert near.get("k1", now=0.0) == (False, None)
    assert [near.get(k, now=0.0)[0] for k in ("k0", "k2", "k3")] == [True, True, True]


def test_discard_and_clear() -> None:
    near: NearCache[int] = NearCache(3)
    near.put("a", 1, 100.0)
    near.put("b", 2, 100.0)
    near.discard("a")
    near.discard("missing")
    assert near.get("a", 0.0) == (False, None)
    near.clear()
    assert len(near) == 0


def test_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        NearCache(0)
