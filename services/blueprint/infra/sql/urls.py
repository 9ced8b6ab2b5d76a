"""Database URLs: which forms we take, and the async driver each one runs on.

Operators paste URLs in the libpq form (`postgresql://…`, often with `?sslmode=`), and
SQLite paths as `sqlite:///…`; the engines need the asyncio drivers, so both are turned
into `postgresql+asyncpg://` and `sqlite+aiosqlite://` here, once, with errors that say
what was wrong without echoing a password.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

POSTGRES_DRIVER = "postgresql+asyncpg"
SQLITE_DRIVER = "sqlite+aiosqlite"

_POSTGRES_ALIASES = {"postgresql", "postgres", POSTGRES_DRIVER}
_SQLITE_ALIASES = {"sqlite", SQLITE_DRIVER}
_ACCEPTED = "postgresql://…, postgresql+asyncpg://…, sqlite:///path or sqlite+aiosqlite:///path"

# A service name becomes a file name: keep it to one safe path component.
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class DatabaseUrlError(ValueError):
    """A database URL we cannot use; the message says why and what is accepted."""


def normalise_url(url: str | URL) -> URL:
    """`url` on its asyncio driver: asyncpg for PostgreSQL, aiosqlite for SQLite."""
    parsed = _parse(url)
    scheme = parsed.drivername
    if scheme in _POSTGRES_ALIASES:
        return _postgres(parsed)
    if scheme in _SQLITE_ALIASES:
        return parsed.set(drivername=SQLITE_DRIVER)
    if scheme.split("+", 1)[0] in {"postgresql", "postgres", "sqlite"}:
        raise DatabaseUrlError(
            f"database URL {_shown(parsed)!r} names driver {scheme!r}; the engines are "
            f"asyncio, so use {_ACCEPTED}"
        )
    raise DatabaseUrlError(
        f"database URL {_shown(parsed)!r}: unsupported scheme {scheme!r}; use {_ACCEPTED}"
    )


def sqlite_url(state_dir: Path, service: str) -> URL:
    """The embedded default: one SQLite file per service under `state_dir`."""
    check_service_name(service)
    return URL.create(SQLITE_DRIVER, database=str(state_dir / f"{service}.db"))


def check_service_name(service: str) -> None:
    if not isinstance(service, str) or not _SERVICE_NAME.fullmatch(service):
        raise ValueError(
            f"service name {service!r} must be lowercase letters, digits, '-' or '_', "
            "starting with a letter (it names files and packages)"
        )


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def is_sqlite_memory(url: URL) -> bool:
    return is_sqlite(url) and url.database in (None, "", ":memory:")


def shown(url: str | URL) -> str:
    """`url` fit for logs and errors: the password masked."""
    try:
        return _shown(_parse(url))
    except DatabaseUrlError:
        return "<unparseable URL>"


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    if not isinstance(url, str):
        raise DatabaseUrlError(f"database URL must be a string, got {type(url).__name__}")
    text = url.strip()
    if not text:
        raise DatabaseUrlError(f"database URL is empty; use {_ACCEPTED}")
    try:
        return make_url(text)
    except (ArgumentError, ValueError) as error:
        # make_url's messages can quote the URL, password and all: say only what broke.
        reason = "not a URL" if isinstance(error, ArgumentError) else "bad port or field"
        raise DatabaseUrlError(
            f"database URL cannot be parsed ({reason}); use {_ACCEPTED}"
        ) from None


def _postgres(url: URL) -> URL:
    if url.host is None and not url.query.get("host"):
        raise DatabaseUrlError(f"PostgreSQL URL {_shown(url)!r} names no host")
    if not url.database:
        raise DatabaseUrlError(f"PostgreSQL URL {_shown(url)!r} names no database")
    query = dict(url.query)
    # libpq spells it sslmode; asyncpg takes the same modes as `ssl`.
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return url.set(drivername=POSTGRES_DRIVER, query=query)


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)
