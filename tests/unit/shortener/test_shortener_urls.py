"""URL validation and normalisation: what is refused, what is stored, and the laws."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.shortener.errors import Refused
from blueprint.shortener.urls import MAX_LENGTH, normalise


@pytest.mark.parametrize(
    ("given_url", "stored"),
    [
        ("https://example.com/a", "https://example.com/a"),
        ("https://example.com", "https://example.com/"),
        ("HTTPS://EXAMPLE.COM/Path", "https://example.com/Path"),  # path case is kept
        ("http://example.com:80/", "http://example.com/"),
        ("https://example.com:443/", "https://example.com/"),
        ("https://example.com:8443/", "https://example.com:8443/"),
        ("http://example.com:443/", "http://example.com:443/"),  # not http's default
        ("https://example.com./", "https://example.com/"),
        ("https://Bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://例え.テスト/", "https://xn--r8jz45g.xn--zckzah/"),
        # A look-alike host is stored, and shown, as what it is.
        ("https://p\u0430ypal.com/", "https://xn--pypal-4ve.com/"),
        ("https://example.com/ü?q=ä#é", "https://example.com/%C3%BC?q=%C3%A4#%C3%A9"),
        ("https://example.com/%7e%2f", "https://example.com/%7E%2F"),
        ("https://example.com/100%", "https://example.com/100%25"),
        ('https://example.com/a"<>`{}|^', "https://example.com/a%22%3C%3E%60%7B%7D%7C%5E"),
        ("https://[2001:DB8::0001]:8080/x", "https://[2001:db8::1]:8080/x"),
        ("http://127.0.0.1:8080/health", "http://127.0.0.1:8080/health"),
        ("https://my_host.example/", "https://my_host.example/"),
        ("https://example.com/?", "https://example.com/"),
        ("https://example.com/p;a=1?x=1&y=2#top", "https://example.com/p;a=1?x=1&y=2#top"),
    ],
)
def test_accepted_urls_are_stored_in_canonical_form(given_url: str, stored: str) -> None:
    assert normalise(given_url) == stored


@pytest.mark.parametrize(
    ("given_url", "why"),
    [
        ("", "required"),
        ("   ", "blank"),
        ("\t\n", "blank"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("JavaScript:alert(1)", "scheme 'javascript'"),
        ("data:text/html,<script>alert(1)</script>", "scheme 'data'"),
        ("ftp://example.com/file", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("example.com/a", "must start with http"),
        ("//example.com/a", "must start with http"),
        ("http:example.com", "no host"),
        ("https:///path", "no host"),
        ("https://user:pass@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://bank.example@evil.example/", "credentials"),
        ("https://example.com/a b", "whitespace U+0020"),
        (" https://example.com/", "whitespace"),
        ("https://example.com/\u00a0", "whitespace U+00A0"),
        ("https://example.com/\x00", "control character U+0000"),
        ("https://example.com/\x1b[31m", "control character U+001B"),
        ("https://example.com/\x7f", "control character U+007F"),
        ("https://exa\u202emple.com/", "U+202E"),  # right-to-left override
        ("https://example.com/\u200b", "U+200B"),  # zero-width space
        ("https://example.com\\@evil.example/", "backslash"),
        ("https://example.com/a\\b", "backslash"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com:port/", "not a valid URL"),
        ("https://example.com:0/", "port 0"),
        ("https://[::1/", "not a valid URL"),
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://-bad-.example/", "not a valid host"),
        ("https://a..b/", "not a valid host"),
        ("https://xn--zz.example/", "invalid xn--"),
        ("https://" + "a" * 64 + ".example/", "not a valid host"),
        ("https://ex%61mple.com/", "not a valid host"),
        ("https://example.com/" + "a" * 10_240, "at most 2048 characters (got 10260)"),
    ],
)
def test_refused_urls_say_why(given_url: str, why: str) -> None:
    with pytest.raises(Refused, match=None) as refused:
        normalise(given_url)
    assert why in str(refused.value)


def test_the_length_limit_applies_to_the_normalised_url_too() -> None:
    # 700 characters given, each becoming %XX%YY: within the limit raw, far over it stored.
    with pytest.raises(Refused, match="once normalised"):
        normalise("https://example.com/" + "é" * 700)
    assert normalise("https://example.com/" + "a" * 2028) == "https://example.com/" + "a" * 2028
    with pytest.raises(Refused, match="at most 2048"):
        normalise("https://example.com/" + "a" * 2029)


def test_a_smaller_limit_can_be_set() -> None:
    with pytest.raises(Refused, match="at most 64 characters"):
        normalise("https://example.com/" + "a" * 60, max_length=64)


# --- properties ---------------------------------------------------------------------

_label = st.text(string.ascii_lowercase + string.digits + "äöüßéя中", min_size=1, max_size=12)
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)
_path = st.text(st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFF), max_size=40).map(
    lambda text: "/" + text
)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=_host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=_path,
)
def test_whatever_is_accepted_is_canonical(
    scheme: str, host: str, port: int | None, path: str
) -> None:
    raw = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"
    try:
        url = normalise(raw)
    except Refused:
        return
    assert url.startswith(("http://", "https://"))
    assert url.isascii() and url.isprintable()
    assert not any(char.isspace() for char in url)
    assert len(url) <= MAX_LENGTH
    authority = url.split("://", 1)[1].split("/", 1)[0]
    assert "@" not in authority and authority == authority.lower()
    assert normalise(url) == url  # idempotent: storing twice changes nothing


@given(st.text(max_size=300))
def test_any_text_is_either_refused_or_an_http_url(raw: str) -> None:
    try:
        url = normalise(raw)
    except Refused:
        return
    assert url.startswith(("http://", "https://")) and url.isascii()
    assert normalise(url) == url


@given(
    st.text(string.ascii_letters, min_size=1, max_size=10),
    st.sampled_from([chr(c) for c in [*range(0, 32), 127, 0x85, 0x200B, 0x202E, 0x2028, 0xFEFF]]),
)
def test_control_and_invisible_characters_are_refused_anywhere(text: str, bad: str) -> None:
    for position in (0, len(text)):
        raw = "https://example.com/" + text[:position] + bad + text[position:]
        with pytest.raises(Refused):
            normalise(raw)
