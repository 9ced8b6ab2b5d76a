"""The shortener's tables. Each shard holds the rows of the codes it owns (see store.py).

Times are timestamps with time zone, always UTC in Python; SQLite has no such type, so
`UtcDateTime` stores naive UTC there and hands back aware datetimes either way.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

CODE_LENGTH = 32
URL_LENGTH = 65_536  # the column's limit; the service's (settings) is far lower
MESSAGE_ID_LENGTH = 200


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class LinkRow(Base):
    __tablename__ = "links"

    code: Mapped[str] = mapped_column(String(CODE_LENGTH), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger)
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    # sha256 of the management token, hex; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class PasteRow(Base):
    __tablename__ = "pastes"
    __table_args__ = (
        CheckConstraint("(content IS NULL) <> (blob_key IS NULL)", name="pastes_content_or_blob"),
    )

    code: Mapped[str] = mapped_column(String(CODE_LENGTH), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger)
    language: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(Integer)
    content: Mapped[str | None] = mapped_column(Text)
    blob_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class DailyClicksRow(Base):
    """Clicks per link per UTC day, summed by the click consumer."""

    __tablename__ = "daily_clicks"

    code: Mapped[str] = mapped_column(String(CODE_LENGTH), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    clicks: Mapped[int] = mapped_column(BigInteger)


class ClickReceiptRow(Base):
    """A click message already counted: written in the same transaction as the count,
    so a redelivered message finds it and counts nothing."""

    __tablename__ = "click_receipts"

    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_LENGTH), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
