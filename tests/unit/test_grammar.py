"""The 1*DIGIT, 1*HEXDIG and token rules: ASCII only, whatever int() and str.isdigit() allow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.http.grammar import (
    MAX_INT64,
    GrammarError,
    is_digits,
    is_field_value,
    is_token,
    parse_digits,
    parse_digits_capped,
    parse_hex_digits,
)


@pytest.mark.parametrize(
    "text, value",
    [
        ("0", 0),
        ("7", 7),
        ("007", 7),
        ("1234567890", 1234567890),
        (str(MAX_INT64), MAX_INT64),
        ("0" * 5000 + "1", 1),  # int() alone refuses 4,300 digits
    ],
)
def test_digits(text: str, value: int) -> None:
    assert is_digits(text)
    assert parse_digits(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+5",
        "-1",
        " 7",
        "7 ",
        "1 2",
        "1_0",
        "0x10",
        "1e3",
        "1.0",
        "\u00b2",
        "\u0663",
        "\uff17",
        "\t1",
        "1\n",
        "١٢",
    ],
)
def test_not_digits(text: str) -> None:
    assert not is_digits(text)
    with pytest.raises(GrammarError):
        parse_digits(text)
    with pytest.raises(GrammarError):
        parse_digits_capped(text, 10)


@pytest.mark.parametrize(
    "text, maximum",
    [
        (str(MAX_INT64 + 1), MAX_INT64),
        ("9" * 30, MAX_INT64),
        ("9" * 10_000, MAX_INT64),
        ("11", 10),
    ],
)
def test_digits_over_the_maximum(text: str, maximum: int) -> None:
    with pytest.raises(GrammarError):
        parse_digits(text, maximum=maximum)


@pytest.mark.parametrize(
    "text, ceiling, value",
    [
        ("5", 10, 5),
        ("10", 10, 10),
        ("11", 10, 10),
        ("9" * 10_000, 10, 10),
        ("0" * 50 + "3", 10, 3),
    ],
)
def test_digits_capped(text: str, ceiling: int, value: int) -> None:
    assert parse_digits_capped(text, ceiling) == value


@given(st.text(max_size=30))
def test_parse_digits_returns_or_raises_its_own_error(text: str) -> None:
    try:
        value = parse_digits(text)
    except GrammarError:
        assert not (text and all(c in "0123456789" for c in text) and int(text) <= MAX_INT64)
    else:
        assert all(c in "0123456789" for c in text) and value == int(text)


@given(st.text(max_size=30), st.integers(min_value=0, max_value=2**70))
def test_parse_digits_capped_returns_or_raises_its_own_error(text: str, ceiling: int) -> None:
    try:
        value = parse_digits_capped(text, ceiling)
    except GrammarError:
        assert not is_digits(text)
    else:
        assert value == min(int(text), ceiling)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Content-Type", True),
        ("x-a_b.c~d!#$%&'*+^`|", True),
        ("", False),
        ("a b", False),
        ("a:b", False),
        ("é", False),
        ("a\tb", False),
        ('"a"', False),
        ("(a)", False),
    ],
)
def test_token(text: str, expected: bool) -> None:
    assert is_token(text) is expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", True),
        ("a", True),
        ("a b\tc", True),
        ("caf\u00e9", True),
        ("\u00ff", True),
        ('"quoted", (comment); x=1', True),
        (" a", False),
        ("a ", False),
        ("\ta", False),
        ("a\r\nb", False),
        ("a\nb", False),
        ("a\x00b", False),
        ("a\x01b", False),
        ("a\x7fb", False),
        ("a\x0bb", False),
        ("\u0100", False),
        ("snow \u2603", False),
    ],
)
def test_field_value(text: str, expected: bool) -> None:
    assert is_field_value(text) is expected


@given(st.text(max_size=20))
def test_a_field_value_is_one_latin_1_octet_per_character_without_controls(text: str) -> None:
    if is_field_value(text):
        assert text == text.strip(" \t")
        assert all(c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff" for c in text)


@pytest.mark.parametrize(
    "text, value",
    [
        ("0", 0),
        ("a", 10),
        ("1F", 31),
        ("00ff", 255),
        ("0" * 5000 + "1", 1),
        (f"{MAX_INT64:x}", MAX_INT64),
    ],
)
def test_hex_digits(text: str, value: int) -> None:
    assert parse_hex_digits(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0x1f",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1_f",
        "g",
        "1\n",
        "\uff11",
        "\u0663",
        f"{MAX_INT64 + 1:x}",
    ],
)
def test_not_hex_digits(text: str) -> None:
    with pytest.raises(GrammarError):
        parse_hex_digits(text)


@given(st.text(max_size=30))
def test_parse_hex_digits_returns_or_raises_its_own_error(text: str) -> None:
    try:
        value = parse_hex_digits(text)
    except GrammarError:
        assert not (text and all(c in "0123456789abcdefABCDEF" for c in text)) or (
            int(text, 16) > MAX_INT64
        )
    else:
        assert value == int(text, 16)
