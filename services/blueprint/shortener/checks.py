"""Request fields -> validated values, or INVALID_ARGUMENT naming every bad field.

The validators (urls, aliases, codes, pastes) say what is wrong with a value; this
module knows which request field it came from. All fields are checked before failing,
so a client fixes everything at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from google.protobuf import duration_pb2

from blueprint.mesh import wellknown
from blueprint.mesh.errors import FieldChecks
from blueprint.mesh.idempotency import KEY_PATTERN, KEY_RULE
from blueprint.shortener import aliases, codes, pastes, urls
from blueprint.shortener.errors import Refused

if TYPE_CHECKING:
    from blueprint.mesh.settings import Settings

MIN_TTL = timedelta(seconds=1)
DEFAULT_STATS_DAYS = 30
MAX_STATS_DAYS = 366
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Limits:
    max_url_length: int = urls.MAX_LENGTH
    max_ttl: timedelta = timedelta(days=3650)
    paste_max_bytes: int = 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_url_length=settings.shortener_max_url_length,
            max_ttl=timedelta(days=settings.shortener_max_ttl_days),
            paste_max_bytes=settings.shortener_paste_max_bytes,
        )


# A Duration field as it arrived; None when the field is unset.
Lifetime = duration_pb2.Duration | None


@dataclass(frozen=True, slots=True)
class ShortenInput:
    url: str  # normalised
    alias: str | None
    ttl: timedelta | None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class PasteInput:
    content: str
    language: str
    ttl: timedelta | None
    idempotency_key: str | None = None


def shorten(
    url: str, custom_alias: str, ttl: Lifetime, limits: Limits, idempotency_key: str = ""
) -> ShortenInput:
    v = FieldChecks()
    normalised = v.check("url", lambda: urls.normalise(url, max_length=limits.max_url_length))
    alias = None
    if custom_alias:  # optional: empty means "generate a code"
        alias = v.check("custom_alias", lambda: aliases.check_alias(custom_alias))
    lifetime = v.check("ttl", lambda: _ttl(ttl, limits.max_ttl))
    key = v.check("idempotency_key", lambda: _idempotency_key(idempotency_key))
    v.raise_if_any()
    assert normalised is not None
    return ShortenInput(normalised, alias, lifetime, key)


def code(value: str) -> str:
    v = FieldChecks()
    checked = v.check("code", lambda: codes.check_code(value))
    v.raise_if_any()
    assert checked is not None
    return checked


def resolve(value: str, request_id: str) -> tuple[str, str]:
    v = FieldChecks()
    checked = v.check("code", lambda: codes.check_code(value))
    v.check("request_id", lambda: _matches(request_id, _REQUEST_ID, "1 to 64", optional=True))
    v.raise_if_any()
    assert checked is not None
    return checked, request_id


def delete(value: str, management_token: str) -> tuple[str, str]:
    v = FieldChecks()
    checked = v.check("code", lambda: codes.check_code(value))
    v.check("management_token", lambda: _matches(management_token, _TOKEN, "1 to 128"))
    v.raise_if_any()
    assert checked is not None
    return checked, management_token


def stats(value: str, days: int) -> tuple[str, int]:
    v = FieldChecks()
    checked = v.check("code", lambda: codes.check_code(value))
    v.require(
        0 <= days <= MAX_STATS_DAYS,
        "days",
        f"must be 0 to {MAX_STATS_DAYS} (0: {DEFAULT_STATS_DAYS})",
    )
    v.raise_if_any()
    assert checked is not None
    return checked, days or DEFAULT_STATS_DAYS


def paste(
    content: str, language: str, ttl: Lifetime, limits: Limits, idempotency_key: str = ""
) -> PasteInput:
    v = FieldChecks()
    v.check("content", lambda: pastes.check_content(content, limits.paste_max_bytes))
    checked_language = v.check("language", lambda: pastes.check_language(language))
    lifetime = v.check("ttl", lambda: _ttl(ttl, limits.max_ttl))
    key = v.check("idempotency_key", lambda: _idempotency_key(idempotency_key))
    v.raise_if_any()
    assert checked_language is not None
    return PasteInput(content, checked_language, lifetime, key)


def _idempotency_key(value: str) -> str | None:
    """None for no key (optional); the key if well formed."""
    if not value:
        return None
    if not value.isascii() or not KEY_PATTERN.fullmatch(value):
        raise Refused(KEY_RULE)
    return value


def _ttl(raw: Lifetime, max_ttl: timedelta) -> timedelta | None:
    # Unset: no expiry; set: a real lifetime, so zero and negative ones are refused.
    return None if raw is None else wellknown.duration(raw, at_least=MIN_TTL, at_most=max_ttl)


def _matches(value: str, pattern: re.Pattern[str], lengths: str, *, optional: bool = False) -> str:
    if optional and not value:
        return value
    if not value:
        raise Refused("required")
    if not value.isascii() or not pattern.fullmatch(value):
        raise Refused(f"{lengths} ASCII letters, digits, '_' or '-'")
    return value
