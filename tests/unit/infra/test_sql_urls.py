"""Database URLs: what is accepted, what each becomes, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from blueprint.infra.sql import DatabaseUrlError, normalise_url, sqlite_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/links", "postgresql+asyncpg://u:p@db:5432/links"),
        ("postgres://u@db/links", "postgresql+asyncpg://u@db/links"),
        ("postgresql+asyncpg://u@db/links", "postgresql+asyncpg://u@db/links"),
        ("  postgresql://u@db/links\n", "postgresql+asyncpg://u@db/links"),
        ("postgresql://u@db/links?sslmode=require", "postgresql+asyncpg://u@db/links?ssl=require"),
        ("sqlite:///rel/links.db", "sqlite+aiosqlite:///rel/links.db"),
        ("sqlite:////abs/links.db", "sqlite+aiosqlite:////abs/links.db"),
        ("sqlite+aiosqlite:///links.db", "sqlite+aiosqlite:///links.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ],
)
def test_urls_are_put_on_their_asyncio_driver(given: str, expected: str) -> None:
    assert normalise_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not a url", "cannot be parsed"),
        ("postgresql://u:secret@db:notaport/links", "cannot be parsed"),
        ("mysql://u:secret@db/links", "unsupported scheme 'mysql'"),
        ("http://example.com/links", "unsupported scheme 'http'"),
        ("postgresql+psycopg2://u:secret@db/links", "names driver 'postgresql\\+psycopg2'"),
        ("sqlite+pysqlite:///x.db", "names driver 'sqlite\\+pysqlite'"),
        ("postgresql://u:secret@db", "names no database"),
        ("postgresql://u:secret@/links", "names no host"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(given: str, message: str) -> None:
    with pytest.raises(DatabaseUrlError, match=message) as caught:
        normalise_url(given)
    assert "secret" not in str(caught.value)  # never echo a password
    assert isinstance(caught.value, ValueError)


def test_a_non_string_url_is_refused() -> None:
    with pytest.raises(DatabaseUrlError, match="must be a string"):
        normalise_url(42)  # type: ignore[arg-type]


def test_the_default_is_one_sqlite_file_per_service_in_the_state_dir(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / ".blueprint", "shortener")
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(tmp_path / ".blueprint" / "shortener.db")


@pytest.mark.parametrize("service", ["", "../etc/passwd", "a/b", "Shortener", "1st", "x" * 80])
def test_a_service_name_that_is_no_safe_file_name_is_refused(service: str) -> None:
    with pytest.raises(ValueError, match="service name"):
        sqlite_url(Path("."), service)
