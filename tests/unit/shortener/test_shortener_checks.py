"""Request checks: every bad field named at once, and the values handed to the domain."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from blueprint.mesh.errors import InvalidArgument
from blueprint.shortener import checks

LIMITS = checks.Limits(max_url_length=2048, max_ttl=timedelta(days=3650), paste_max_bytes=1024)


def violations(call: object) -> dict[str, str]:
    assert callable(call)
    with pytest.raises(InvalidArgument) as raised:
        call()
    return raised.value.violations


def test_shorten_hands_over_the_normalised_url_alias_and_ttl() -> None:
    wanted = checks.shorten("HTTPS://Example.com", "my-link", Duration(seconds=3600), LIMITS)
    assert wanted == checks.ShortenInput("https://example.com/", "my-link", timedelta(hours=1))
    assert checks.shorten("https://example.com/", "", None, LIMITS).alias is None


def test_every_bad_field_is_named_in_one_answer() -> None:
    found = violations(
        lambda: checks.shorten("ftp://x", "p\u0430ypal", Duration(seconds=-1), LIMITS)
    )
    assert set(found) == {"url", "custom_alias", "ttl"}
    assert "ftp" in found["url"] and "U+0430" in found["custom_alias"]


@pytest.mark.parametrize(
    ("ttl", "why"),
    [
        ((-1, 0), "at least 1 s"),
        ((0, -1), "at least 1 s"),
        ((0, 0), "at least 1 s"),
        ((0, 999_999_999), "at least 1 s"),
        ((3650 * 86400 + 1, 0), "at most 3650 days"),
        ((315_576_000_000, 0), "at most 3650 days"),  # Duration's own maximum
        ((315_576_000_001, 0), "not a valid Duration"),
        ((2**63 - 1, 0), "not a valid Duration"),  # a client may send any int64
        ((-(2**63), 0), "not a valid Duration"),
        ((0, -(2**31)), "not a valid Duration"),
        ((5, -1), "not a valid Duration"),
        ((-5, 1), "not a valid Duration"),
        ((5, 1_000_000_000), "not a valid Duration"),
    ],
)
def test_bad_ttls(ttl: tuple[int, int], why: str) -> None:
    lifetime = Duration(seconds=ttl[0], nanos=ttl[1])
    assert why in violations(lambda: checks.shorten("https://e.com/", "", lifetime, LIMITS))["ttl"]


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [((1, 0), timedelta(seconds=1)), ((3650 * 86400, 0), timedelta(days=3650))],
)
def test_ttl_bounds_are_inclusive(ttl: tuple[int, int], expected: timedelta) -> None:
    lifetime = Duration(seconds=ttl[0], nanos=ttl[1])
    assert checks.shorten("https://e.com/", "", lifetime, LIMITS).ttl == expected


def test_resolve_takes_an_optional_request_id() -> None:
    assert checks.resolve("abc", "") == ("abc", "")
    assert checks.resolve("abc", "req-1_A") == ("abc", "req-1_A")
    assert set(violations(lambda: checks.resolve("", "bad id"))) == {"code", "request_id"}
    assert "request_id" in violations(lambda: checks.resolve("abc", "x" * 65))


def test_delete_needs_a_token() -> None:
    assert violations(lambda: checks.delete("abc", ""))["management_token"] == "required"
    assert "management_token" in violations(lambda: checks.delete("abc", "tok en"))


@pytest.mark.parametrize(("days", "kept"), [(0, 30), (1, 1), (366, 366)])
def test_stats_days_default_to_thirty(days: int, kept: int) -> None:
    assert checks.stats("abc", days) == ("abc", kept)


@pytest.mark.parametrize("days", [-1, 367, 2**31 - 1])
def test_stats_days_out_of_range(days: int) -> None:
    assert "days" in violations(lambda: checks.stats("abc", days))


def test_paste_defaults_its_language_to_text() -> None:
    assert checks.paste("x", "", None, LIMITS) == checks.PasteInput("x", "text", None)
    assert checks.paste("x", "python", Duration(seconds=60), LIMITS).ttl == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("content", "language", "field", "why"),
    [
        ("", "text", "content", "required"),
        ("a" * 1025, "text", "content", "at most 1024 bytes of UTF-8 (got 1025)"),
        ("é" * 513, "text", "content", "(got 1026)"),  # bytes, not characters
        ("a\x00b", "text", "content", "NUL"),
        ("x", "cobol", "language", "unknown language 'cobol'"),
        ("x", "Python", "language", "unknown language"),
        ("x", "py thon" * 20, "language", "…"),
    ],
)
def test_bad_pastes(content: str, language: str, field: str, why: str) -> None:
    found = violations(lambda: checks.paste(content, language, None, LIMITS))
    assert why in found[field]
