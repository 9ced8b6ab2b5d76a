"""Custom aliases: the codes people choose, and the rules that keep them safe.

ASCII only. Unicode normalisation (NFKC) would fold a fullwidth "paypal" (U+FF50
U+FF41 ...) into the ASCII word, but not "paypal" spelt with a Cyrillic a (U+0430), which
looks the same and is a different string: the only rule that refuses every look-alike is
to refuse non-ASCII outright. Aliases are case-sensitive, like generated base62 codes;
reserved words are refused in any case, so `Admin` cannot pose as a page of the service.
"""

from __future__ import annotations

import re
import unicodedata

from blueprint.shortener.errors import Refused

MIN_LENGTH = 3
MAX_LENGTH = 32
_CHARSET = re.compile(r"^[A-Za-z0-9_-]+$")

# Paths a web front end for the service would want for itself, and words that invite
# phishing when they look official.
RESERVED = frozenset(
    {
        "about", "account", "admin", "administrator", "api", "app", "assets", "auth",
        "blog", "dashboard", "delete", "docs", "favicon", "health", "healthz", "help",
        "home", "index", "info", "link", "links", "login", "logout", "metrics", "new",
        "oauth", "paste", "pastes", "privacy", "ready", "readyz", "register", "root",
        "security", "settings", "shorten", "signin", "signup", "static", "stats",
        "status", "support", "system", "terms", "user", "users", "v1", "v2", "www",
    }
)  # fmt: skip


def check_alias(alias: str) -> str:
    """`alias` if it may be used as a code; `Refused` saying why not."""
    for position, char in enumerate(alias):
        if not char.isascii():
            name = unicodedata.name(char, "unnamed character")
            raise Refused(
                f"{char!r} (U+{ord(char):04X} {name}) at position {position} is not ASCII; "
                "use letters A-Z a-z, digits, '_' or '-'"
            )
    if not MIN_LENGTH <= len(alias) <= MAX_LENGTH:
        raise Refused(f"must be {MIN_LENGTH} to {MAX_LENGTH} characters (got {len(alias)})")
    if not _CHARSET.fullmatch(alias):
        raise Refused("only letters A-Z a-z, digits, '_' or '-'")
    if alias.lower() in RESERVED:
        raise Refused(f"{alias!r} is reserved")
    return alias
