"""Base62 codes: the guide's example, round trips, order, and refusing bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.infra.ids import base62

U64 = st.integers(min_value=0, max_value=2**64 - 1)


def test_the_guides_example() -> None:
    assert base62.encode(12345) == "3D7"
    assert base62.decode("3D7") == 12345


def test_small_values_and_padding() -> None:
    assert base62.encode(0) == "0"
    assert base62.encode(61) == "z"
    assert base62.encode(62) == "10"
    assert base62.encode(12345, width=6) == "0003D7"
    assert base62.decode("0003D7") == 12345


def test_a_64_bit_id_takes_at_most_eleven_characters() -> None:
    assert len(base62.encode(2**64 - 1)) == base62.ID_WIDTH
    assert len(base62.encode(2**63 - 1)) == base62.ID_WIDTH


@given(U64 | st.integers(min_value=0, max_value=10**40))
def test_decode_undoes_encode(number: int) -> None:
    code = base62.encode(number)
    assert base62.decode(code) == number
    assert set(code) <= set(base62.ALPHABET)


@given(st.text(alphabet=base62.ALPHABET, min_size=1, max_size=30))
def test_encode_undoes_decode_up_to_leading_zeros(code: str) -> None:
    assert base62.encode(base62.decode(code)) == (code.lstrip("0") or "0")


@given(U64, U64)
def test_fixed_width_codes_sort_like_their_numbers(a: int, b: int) -> None:
    code_a = base62.encode(a, width=base62.ID_WIDTH)
    code_b = base62.encode(b, width=base62.ID_WIDTH)
    assert (code_a < code_b) == (a < b)
    assert (code_a == code_b) == (a == b)


@given(U64, U64)
def test_unpadded_codes_sort_by_length_then_text(a: int, b: int) -> None:
    code_a, code_b = base62.encode(a), base62.encode(b)
    assert ((len(code_a), code_a) < (len(code_b), code_b)) == (a < b)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("", "empty"),
        ("abc-def", "'-' at position 3"),
        ("abc def", "' ' at position 3"),
        ("3D7\n", "'\\\\n' at position 3"),
        ("ab_c", "'_' at position 2"),
        ("ab=", "'=' at position 2"),
        ("héllo", "'é' at position 1"),
        ("٣", "'٣' at position 0"),  # an Arabic-Indic digit: isdigit() yet not ours
        ("Ａ", "'Ａ' at position 0"),  # noqa: RUF001 - fullwidth A, a confusable
    ],
)
def test_decode_refuses_characters_outside_the_alphabet(code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        base62.decode(code)


def test_decode_does_not_echo_a_huge_code() -> None:
    with pytest.raises(ValueError) as caught:
        base62.decode("a" * 10_000 + "!")
    assert "10001 characters" in str(caught.value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("value", [-1, -(2**70)])
def test_encode_refuses_negative_numbers(value: int) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        base62.encode(value)


@pytest.mark.parametrize("value", [1.0, "12", None, True])
def test_encode_refuses_non_integers(value: object) -> None:
    with pytest.raises(TypeError, match="integers"):
        base62.encode(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [12, b"3D7", None])
def test_decode_refuses_non_strings(value: object) -> None:
    with pytest.raises(TypeError, match="strings"):
        base62.decode(value)  # type: ignore[arg-type]
