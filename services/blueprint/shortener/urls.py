"""URLs a link may point to: checked, then written in one canonical form.

A shortener hides where a link goes, so it must refuse what browsers would run or
misread: only http and https (no `javascript:`, `data:`, `file:`, `ftp:`), no
credentials (`https://bank.com@evil.example/` reads as the bank's), no whitespace or
control characters (including invisible format characters such as bidi overrides, which
make a URL display differently from what it is), no backslashes (browsers read them as
`/`, servers may not). What is accepted is normalised as RFC 3986 §6 describes, so the
stored URL is ASCII and unambiguous: lowercase scheme and host, internationalised hosts
in IDNA A-labels (`bücher.example` -> `xn--bcher-kva.example`, which also shows
look-alike hosts for what they are), the default port dropped, an empty path as `/`,
non-ASCII and unsafe characters percent-encoded, percent escapes in uppercase.
"""

from __future__ import annotations

import ipaddress
import re
import string
import unicodedata
from urllib.parse import SplitResult, urlsplit

import idna

from blueprint.shortener.errors import Refused

MAX_LENGTH = 2048  # what browsers and proxies reliably carry
MAX_HOST_LENGTH = 253
SCHEMES = {"http": 80, "https": 443}  # scheme -> its default port

# Categories refused anywhere: controls, format (zero-width, bidi), surrogates,
# private use, and every kind of space or separator.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zs", "Zl", "Zp"}
_ASCII_HOST = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")
_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PATH_SAFE = frozenset(_UNRESERVED + _SUB_DELIMS + ":@/")
_QUERY_SAFE = _PATH_SAFE | {"?"}
_HEX = frozenset(string.hexdigits)


def normalise(raw: str, *, max_length: int = MAX_LENGTH) -> str:
    """The canonical form of `raw`, or `Refused` saying what is wrong with it."""
    if not raw:
        raise Refused("required")
    if raw.isspace():
        raise Refused("must not be blank")
    if len(raw) > max_length:
        raise Refused(f"at most {max_length} characters (got {len(raw)})")
    _check_characters(raw)
    try:
        parts = urlsplit(raw)
        port = parts.port  # parsed here: a bad port raises ValueError too
    except ValueError as error:
        raise Refused(f"not a valid URL ({error})") from None
    scheme = parts.scheme.lower()
    if not scheme or not raw[len(scheme) :].startswith(":"):
        raise Refused("must start with http:// or https://")
    if scheme not in SCHEMES:
        raise Refused(f"scheme {scheme!r} is not allowed; only http and https")
    authority = _authority(parts, scheme, port)
    path = _encode(parts.path, _PATH_SAFE) or "/"
    url = f"{scheme}://{authority}{path}"
    if parts.query:
        url += "?" + _encode(parts.query, _QUERY_SAFE)
    if parts.fragment:
        url += "#" + _encode(parts.fragment, _QUERY_SAFE)
    if len(url) > max_length:
        raise Refused(f"at most {max_length} characters once normalised (got {len(url)})")
    return url


def _check_characters(raw: str) -> None:
    for position, char in enumerate(raw):
        if char == "\\":
            raise Refused(f"backslash at position {position}; use '/' or %5C")
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            kind = "whitespace" if category[0] == "Z" or char.isspace() else "control character"
            name = unicodedata.name(char, "")
            shown = f"U+{ord(char):04X}" + (f" {name}" if name else "")
            raise Refused(f"{kind} {shown} at position {position}; percent-encode it")


def _authority(parts: SplitResult, scheme: str, port: int | None) -> str:
    netloc = parts.netloc
    if not netloc:
        raise Refused("has no host")
    if "@" in netloc:
        raise Refused("must not contain credentials (user:password@)")
    host = _host(netloc)
    if port is None or port == SCHEMES[scheme]:
        return host
    if port == 0:
        raise Refused("port 0 is not a port a link can reach")
    return f"{host}:{port}"


def _host(netloc: str) -> str:
    if netloc.startswith("["):
        literal, _, _ = netloc[1:].partition("]")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise Refused(f"host [{literal[:64]}] is not an IPv6 address") from None
        if address.scope_id:
            raise Refused("IPv6 zone ids (%...) are local to one machine")
        return f"[{address.compressed}]"
    host = netloc.rpartition(":")[0] if ":" in netloc else netloc
    host = host.removesuffix(".")  # the root label: "example.com." is "example.com"
    if not host:
        raise Refused("has no host")
    if host.isascii():
        host = host.lower()
        if not _ASCII_HOST.fullmatch(host):
            raise Refused(f"host {host[:64]!r} is not a valid host name")
        if any(label.startswith("xn--") for label in host.split(".")):
            _check_a_labels(host)
    else:
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as error:
            raise Refused(f"host is not a valid internationalised domain name ({error})") from None
    if len(host) > MAX_HOST_LENGTH:
        raise Refused(f"host longer than {MAX_HOST_LENGTH} characters")
    return host


def _check_a_labels(host: str) -> None:
    # An A-label must decode to a valid U-label, or browsers show it differently.
    try:
        idna.decode(host)
    except (idna.IDNAError, UnicodeError) as error:
        raise Refused(f"host has an invalid xn-- label ({error})") from None


def _encode(text: str, safe: frozenset[str]) -> str:
    """Percent-encode what `safe` lacks; keep valid escapes (in uppercase), encode stray '%'."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            escape = text[i + 1 : i + 3]
            if len(escape) == 2 and set(escape) <= _HEX:
                out.append("%" + escape.upper())
                i += 3
                continue
            out.append("%25")
        elif char in safe:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
        i += 1
    return "".join(out)
