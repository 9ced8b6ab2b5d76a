"""Custom alias rules: charset, length, reserved words, and no Unicode look-alikes."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.shortener.aliases import MAX_LENGTH, MIN_LENGTH, RESERVED, check_alias
from blueprint.shortener.errors import Refused


@pytest.mark.parametrize("alias", ["abc", "my-link", "My_Link_2024", "a" * 32, "---", "PayPal"])
def test_good_aliases_are_kept_as_given(alias: str) -> None:
    assert check_alias(alias) == alias


@pytest.mark.parametrize(
    ("alias", "why"),
    [
        ("p\u0430ypal", "U+0430 CYRILLIC SMALL LETTER A"),  # looks exactly like "paypal"
        ("\u0440aypal", "U+0440 CYRILLIC SMALL LETTER ER"),
        ("\uff50\uff41\uff59\uff50\uff41\uff4c", "U+FF50 FULLWIDTH LATIN SMALL LETTER P"),
        ("goog\u04cfe", "not ASCII"),  # Cyrillic palochka for 'l'
        ("caf\u00e9", "not ASCII"),
        ("e\u0301x", "not ASCII"),  # combining accent
        ("ab\u200bc", "not ASCII"),  # zero-width space
        ("ab", f"must be {MIN_LENGTH} to {MAX_LENGTH} characters (got 2)"),
        ("", "got 0"),
        ("a" * 33, "(got 33)"),
        ("has space", "only letters"),
        ("dot.ted", "only letters"),
        ("slash/ed", "only letters"),
        ("per%cent", "only letters"),
        ("admin", "reserved"),
        ("ADMIN", "reserved"),
        ("Api", "reserved"),
        ("health", "reserved"),
    ],
)
def test_bad_aliases_are_refused_with_the_reason(alias: str, why: str) -> None:
    with pytest.raises(Refused) as refused:
        check_alias(alias)
    assert why in str(refused.value)


def test_every_reserved_word_is_refused_in_any_case() -> None:
    for word in RESERVED:
        for form in (word, word.upper(), word.capitalize()):
            if len(form) >= MIN_LENGTH:
                with pytest.raises(Refused, match="reserved"):
                    check_alias(form)


@given(st.text(min_size=1, max_size=40))
def test_an_accepted_alias_is_plain_ascii_and_no_reserved_word(alias: str) -> None:
    try:
        checked = check_alias(alias)
    except Refused:
        return
    assert set(checked) <= set(string.ascii_letters + string.digits + "_-")
    assert MIN_LENGTH <= len(checked) <= MAX_LENGTH
    assert checked.lower() not in RESERVED


@given(st.text(string.ascii_lowercase, min_size=3, max_size=12), st.data())
def test_any_non_ascii_letter_makes_an_alias_refused(base: str, data: st.DataObject) -> None:
    # Letters from any script, including those NFKC maps to ASCII.
    letter = data.draw(
        st.characters(min_codepoint=0x80, max_codepoint=0xFFFF, categories=("Ll", "Lu", "Lo"))
    )
    position = data.draw(st.integers(0, len(base)))
    alias = base[:position] + letter + base[position:]
    with pytest.raises(Refused, match="not ASCII"):
        check_alias(alias)


def test_letters_that_nfkc_folds_into_ascii_are_refused_too() -> None:
    fullwidth = "".join(chr(0xFF41 + ord(c) - ord("a")) for c in "paypal")
    assert unicodedata.normalize("NFKC", fullwidth) == "paypal"
    with pytest.raises(Refused, match="not ASCII"):
        check_alias(fullwidth)
