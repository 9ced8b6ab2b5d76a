"""A queue message: what handlers receive, and how it is laid out in a stream entry.

Stream entry fields (all text):
  mid           stable message id: the idempotency key, kept across retries
  payload       the JSON document the publisher gave
  prior         deliveries that happened before this entry (earlier entries of the same
                message, re-enqueued by retries); the delivery number is prior plus the
                entry's own delivery count from the consumer group
  published_at  Unix milliseconds of the first publish
  error         the last failure, on a retry
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    """One ready stream per level; consumers read HIGH, then NORMAL, then LOW."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class MalformedEntry(ValueError):
    """A stream entry this code did not write (or that lost fields)."""


@dataclass(frozen=True)
class Message:
    """What a handler is given."""

    id: str  # stable across deliveries and retries: key side effects by it
    payload: Any
    attempt: int  # this delivery's number, 1 for the first
    stream: str
    priority: Priority
    entry_id: str  # this delivery's stream entry
    published_at: float  # Unix seconds of the first publish


@dataclass(frozen=True)
class Envelope:
    mid: str
    payload: str  # JSON text, decoded only for the handler
    prior: int
    published_at_ms: int
    error: str = ""

    def fields(self) -> dict[str, str]:
        return {
            "mid": self.mid,
            "payload": self.payload,
            "prior": str(self.prior),
            "published_at": str(self.published_at_ms),
            "error": self.error,
        }

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes] | None) -> Envelope:
        if not raw:
            raise MalformedEntry("stream entry has no fields")
        try:
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            return cls(
                mid=fields["mid"],
                payload=fields["payload"],
                prior=int(fields["prior"]),
                published_at_ms=int(fields["published_at"]),
                error=fields.get("error", ""),
            )
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise MalformedEntry(f"stream entry is not a queue message: {exc!r}") from exc

    def delayed_member(self, priority: Priority) -> str:
        """The sorted-set member for a scheduled retry: the entry plus where it goes back."""
        return json.dumps({"p": str(int(priority)), **self.fields()}, sort_keys=True)


def encode_payload(payload: Any, max_bytes: int) -> str:
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serializable: {exc}") from exc
    if len(text.encode()) > max_bytes:
        raise ValueError(f"payload is {len(text.encode())} bytes; the limit is {max_bytes}")
    return text
