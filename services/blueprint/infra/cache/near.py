"""The near cache: an in-process copy of hot keys in front of Redis.

Least-recently-used eviction keeps it bounded and keeps exactly the hot keys; a short
TTL bounds how stale another process's write or delete can look here, since nothing
tells this process about them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class NearCache(Generic[V]):
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str, now: float) -> tuple[bool, V | None]:
        """(found, value); an expired entry is dropped and reported as not found."""
        item = self._entries.get(key)
        if item is None:
            return False, None
        expires_at, value = item
        if now >= expires_at:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: str, value: V, expires_at: float) -> None:
        self._entries[key] = (expires_at, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
