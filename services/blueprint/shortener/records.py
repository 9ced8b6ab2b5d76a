"""What the store hands the domain and back: plain values, no SQL, no protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Link:
    code: str
    id: int  # Snowflake id; tells a re-created alias apart from the link it replaced
    url: str
    created_at: datetime
    expires_at: datetime | None  # None: never

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class Paste:
    code: str
    id: int
    language: str
    size_bytes: int
    created_at: datetime
    expires_at: datetime | None
    content: str | None  # inline content, or None when it lives in the blob store
    blob_key: str | None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class DailyClicks:
    day: date
    clicks: int


@dataclass(frozen=True, slots=True)
class ReceivedClick:
    """A click message as the store counts it: once per message id."""

    message_id: str
    code: str
    link_id: int  # the link clicked; a click on another link under the code is not counted
    day: date


@dataclass(frozen=True, slots=True)
class ClickStats:
    total: int
    daily: list[DailyClicks]  # oldest first; days without clicks are absent


class DeleteOutcome(enum.Enum):
    DELETED = "deleted"
    MISSING = "missing"
    WRONG_TOKEN = "wrong_token"
