"""Body framing: one Content-Length parser, never laxer than Tornado's reader."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tornado.http1connection import is_transfer_encoding_chunked, parse_int
from tornado.httputil import HTTPHeaders, HTTPInputError

from mediaproxy.http.framing import (
    InvalidFraming,
    parse_content_length,
    request_body_framing,
    response_body_length,
)
from mediaproxy.http.grammar import MAX_INT64


@pytest.mark.parametrize(
    "values, length",
    [
        (["0"], 0),
        (["5"], 5),
        (["005"], 5),
        (["5", "5"], 5),
        (["5,5"], 5),
        (["5, 5"], 5),
        (["5,\t5, 5"], 5),
        ([str(MAX_INT64)], MAX_INT64),
    ],
)
def test_content_length(values: list[str], length: int) -> None:
    assert parse_content_length(values) == length


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["abc"],
        ["+5"],
        ["-1"],
        ["\u00b2"],
        ["\u0663"],
        ["1_0"],
        ["1 2"],
        ["0x5"],
        ["5", "6"],
        ["5, 6"],
        ["5,,5"],
        ["5 ,5"],
        ["5,"],
        [",5"],
        ["5", "05"],
        [str(MAX_INT64 + 1)],
        ["9" * 30],
        ["9" * 10_000],
    ],
)
def test_invalid_content_length(values: list[str]) -> None:
    with pytest.raises(InvalidFraming):
        parse_content_length(values)


def tornado_content_length(value: str) -> int:
    """What Tornado's HTTP1Connection._read_body makes of a (joined) Content-Length value."""
    pieces = re.split(r",[ \t]*", value)
    if any(piece != pieces[0] for piece in pieces):
        raise ValueError(value)
    length = parse_int(pieces[0])
    if length > MAX_INT64:
        raise ValueError(value)
    return length


content_length_text = st.one_of(
    st.text(max_size=20),
    st.lists(
        st.sampled_from(["5", "05", "+5", "-1", "", " ", ",", ", ", "\t", "²", "9" * 20]),
        max_size=5,
    ).map("".join),
)


@given(st.lists(content_length_text, max_size=3))
def test_parse_content_length_returns_or_raises_its_own_error(values: list[str]) -> None:
    try:
        length = parse_content_length(values)
    except InvalidFraming:
        return
    # Accepted: Tornado reads the same length from the same fields, joined as it joins them.
    assert tornado_content_length(",".join(values)) == length


@pytest.mark.parametrize(
    "transfer_encoding, content_length, expected",
    [
        (None, None, (False, None)),
        (None, "0", (False, 0)),
        (None, "12", (True, 12)),
        (None, "12,12", (True, 12)),  # a repeated field, joined by HTTPHeaders
        (None, "12, \t12", (True, 12)),
        ("chunked", None, (True, None)),
        ("Chunked", None, (True, None)),
        # Everything Tornado answers 400 to once it reads the body:
        ("gzip, chunked", None, None),
        ("chunked, chunked", None, None),
        ("chunked", "5", None),
        ("chunked", "0", None),
        ("identity", None, None),
        (None, "12, 13", None),
        (None, "12 ,12", None),
        (None, "-1", None),
        (None, "+1", None),
        (None, "0x10", None),
        (None, "\u00b2", None),  # a digit to str.isdigit(), not to Tornado
        (None, "", None),
    ],
)
def test_request_body_framing(
    transfer_encoding: str | None,
    content_length: str | None,
    expected: tuple[bool, int | None] | None,
) -> None:
    assert request_body_framing(transfer_encoding, content_length) == expected


@given(st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=20))
def test_request_body_framing_takes_transfer_encoding_as_tornado_does(value: str) -> None:
    try:
        chunked = is_transfer_encoding_chunked(HTTPHeaders({"Transfer-Encoding": value}))
    except HTTPInputError:
        assert request_body_framing(value, None) is None
    else:
        assert chunked and request_body_framing(value, None) == (True, None)


@pytest.mark.parametrize(
    "status, head_request, transfer_encoding, content_length, expected",
    [
        (200, False, None, None, None),  # ended by the connection closing
        (200, False, None, "5", 5),
        (200, False, None, "5, 5", 5),
        (200, False, "chunked", None, None),
        (200, True, None, "5", 5),
        (304, False, None, "5", 5),
        (204, False, None, "0", 0),
        (204, False, None, None, None),
    ],
)
def test_response_body_length(
    status: int,
    head_request: bool,
    transfer_encoding: str | None,
    content_length: str | None,
    expected: int | None,
) -> None:
    assert (
        response_body_length(
            status,
            head_request=head_request,
            transfer_encoding=transfer_encoding,
            content_length=content_length,
        )
        == expected
    )


@pytest.mark.parametrize(
    "status, head_request, transfer_encoding, content_length",
    [
        (200, False, None, "abc"),
        (200, True, None, "abc"),  # forwarded, so checked even with no body to read
        (304, False, None, "-1"),
        (200, False, "chunked", "5"),
        (200, False, "gzip", None),
        (204, False, None, "5"),
        (204, False, "chunked", None),
    ],
)
def test_invalid_response_framing(
    status: int, head_request: bool, transfer_encoding: str | None, content_length: str | None
) -> None:
    with pytest.raises(InvalidFraming):
        response_body_length(
            status,
            head_request=head_request,
            transfer_encoding=transfer_encoding,
            content_length=content_length,
        )
