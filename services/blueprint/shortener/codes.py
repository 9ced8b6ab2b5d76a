"""Short codes: what a request may name, and how the service makes new ones.

Two schemes, chosen by `BLUEPRINT_SHORTENER_CODE_SCHEME`:

- snowflake (default): base62 of a 64-bit Snowflake id. Unique by construction, so
  creating a link is one insert; 10-11 characters, time-ordered.
- hash: the guide's scheme. Hash the URL with a salt, keep 7 base62 characters; if the
  code is taken, hash again with a counter. 62**7 (3.5 trillion) codes keep collisions
  rare, but every one costs an insert attempt, and the same URL shortened again takes
  the next counter. The salt keeps codes from being computed from URLs by others.

The guide keeps the first 7 characters of the hash; we keep the number modulo 62**7,
i.e. its last 7 base62 digits, which are uniformly distributed (the leading digit of a
256-bit number in base62 is not).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from blueprint.infra.ids import base62
from blueprint.shortener.errors import Refused

HASH_CODE_LENGTH = 7
MAX_HASH_ATTEMPTS = 16
MAX_SNOWFLAKE_ATTEMPTS = 3  # only a custom alias squatting on a future code collides
MAX_CODE_LENGTH = 32
_CODE = re.compile(r"^[A-Za-z0-9_-]+$")
_HASH_SPACE = base62.BASE**HASH_CODE_LENGTH


def check_code(code: str) -> str:
    """`code` if it could name a link or paste (generated or alias); `Refused` if not."""
    if not code:
        raise Refused("required")
    if len(code) > MAX_CODE_LENGTH:
        raise Refused(f"at most {MAX_CODE_LENGTH} characters (got {len(code)})")
    if not code.isascii() or not _CODE.fullmatch(code):
        raise Refused("only letters A-Z a-z, digits, '_' or '-'")
    return code


def snowflake_code(link_id: int) -> str:
    return base62.encode(link_id)


def hash_code(url: str, salt: str, attempt: int) -> str:
    """Attempt `attempt` (0 first) of the hash scheme's code for `url`."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    digest = hashlib.sha256(f"{salt}\x00{url}\x00{attempt}".encode()).digest()
    return base62.encode(int.from_bytes(digest, "big") % _HASH_SPACE, width=HASH_CODE_LENGTH)


def hash_codes(url: str, salt: str, attempts: int = MAX_HASH_ATTEMPTS) -> Iterator[str]:
    """The codes to try for `url`, in order: the hash, then rehashes with a counter."""
    for attempt in range(attempts):
        yield hash_code(url, salt, attempt)
