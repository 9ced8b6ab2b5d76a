"""The shortener's tables. Each shard holds the rows of the codes it owns (see store.py).

Times are timestamps with time zone, always UTC in Python (`UtcDateTime`).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from blueprint.infra.idempotency import records_table
from blueprint.infra.sql.types import UtcDateTime

CODE_LENGTH = 32
IDEMPOTENCY_KEY_LENGTH = 128
URL_LENGTH = 65_536  # the column's limit; the service's (settings) is far lower
MESSAGE_ID_LENGTH = 200


class Base(DeclarativeBase):
    pass


class LinkRow(Base):
    __tablename__ = "links"

    code: Mapped[str] = mapped_column(String(CODE_LENGTH), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger)
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    # sha256 of the management token, hex; the token itself is never stored here.
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # The Shorten idempotency key that wrote the row (revision 0002): a resumed attempt
    # of that request that meets this row knows it as its own.
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH))


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
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH))


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


# Shorten's and CreatePaste's idempotency records (blueprint.infra.idempotency).
IDEMPOTENCY_RECORDS = records_table(Base.metadata)
