"""What one cached key holds in Redis: the value plus what XFetch needs to know.

One binary string per key (one GET, one SET): a 2-byte version tag, a flags byte,
δ (seconds the value took to compute) and the soft expiry (Unix seconds), then the
serialized value. The Redis key itself lives past the soft expiry by the stale window,
which is what makes stale-while-revalidate possible.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct(">2sBdd")
_TAG = b"C1"
_NEGATIVE = 0x01


class CorruptEntry(ValueError):
    """Bytes under a cache key that this code did not write."""


@dataclass(frozen=True)
class Entry:
    payload: bytes  # the serialized value; empty for a negative entry
    delta: float  # seconds the loader took
    expiry: float  # soft expiry, Unix seconds
    negative: bool = False  # "the source has no such key", cached to spare it

    def encode(self) -> bytes:
        flags = _NEGATIVE if self.negative else 0
        return _HEADER.pack(_TAG, flags, self.delta, self.expiry) + self.payload

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        if len(raw) < _HEADER.size:
            raise CorruptEntry(f"cache entry of {len(raw)} bytes is shorter than its header")
        tag, flags, delta, expiry = _HEADER.unpack_from(raw)
        if tag != _TAG:
            raise CorruptEntry(f"cache entry has unknown tag {tag!r}")
        return cls(raw[_HEADER.size :], delta, expiry, bool(flags & _NEGATIVE))
