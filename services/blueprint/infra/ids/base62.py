"""Base62 codes for non-negative integers: short, URL-safe, case-sensitive.

The alphabet is 0-9, A-Z, a-z, in ASCII order, which gives the guide's own example
(12345 -> "3D7") and one more property: codes of equal width sort as text the way their
numbers sort, so `encode(id, width=ID_WIDTH)` keeps time-ordered ids in order as strings.
"""

from __future__ import annotations

import string

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
BASE = len(ALPHABET)
_VALUE = {char: value for value, char in enumerate(ALPHABET)}

# Characters a 64-bit id takes at most: 62**11 > 2**64 > 62**10.
ID_WIDTH = 11


def encode(number: int, width: int = 0) -> str:
    """`number` in base62, left-padded with "0" to at least `width` characters."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"base62 encodes integers, got {type(number).__name__}")
    if number < 0:
        raise ValueError(f"base62 encodes non-negative integers, got {number}")
    digits = []
    while True:
        number, remainder = divmod(number, BASE)
        digits.append(ALPHABET[remainder])
        if number == 0:
            break
    return "".join(reversed(digits)).rjust(width, "0")


def decode(code: str) -> int:
    """The integer `code` stands for; any character outside the alphabet is refused."""
    if not isinstance(code, str):
        raise TypeError(f"base62 decodes strings, got {type(code).__name__}")
    if not code:
        raise ValueError("base62 code is empty")
    number = 0
    for position, char in enumerate(code):
        value = _VALUE.get(char)
        if value is None:
            raise ValueError(
                f"base62 code {_preview(code)} has {char!r} at position {position}; "
                "only 0-9, A-Z and a-z are allowed"
            )
        number = number * BASE + value
    return number


def _preview(code: str) -> str:
    # Codes come from clients: quote a short one, never echo a huge one back.
    return repr(code) if len(code) <= 32 else f"{code[:32]!r}… ({len(code)} characters)"
