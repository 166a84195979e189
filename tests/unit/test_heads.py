"""An origin's response head: parsed whole, or MalformedHead, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.http.heads import MalformedHead, ParsedHead, parse_response_head


@pytest.mark.parametrize(
    "block, parsed",
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", ParsedHead("HTTP/1.1", 200, "OK", [])),
        (
            b"HTTP/1.0 404 Not Found\r\nContent-Length: 5\r\nX-A:  b c \t\r\n\r\n",
            ParsedHead("HTTP/1.0", 404, "Not Found", [("Content-Length", "5"), ("X-A", "b c")]),
        ),
        # Repeats stay repeats: framing.response_body_length judges them, not this parser.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n",
            ParsedHead(
                "HTTP/1.1", 200, "OK", [("Content-Length", "5"), ("Content-Length", "5, 5")]
            ),
        ),
        (b"HTTP/1.1 204\r\n\r\n", ParsedHead("HTTP/1.1", 204, "", [])),
        (b"HTTP/1.1 200 \r\n\r\n", ParsedHead("HTTP/1.1", 200, "", [])),
        (b"HTTP/1.1 103 Early Hints\n\n", ParsedHead("HTTP/1.1", 103, "Early Hints", [])),
        (b"HTTP/1.1 200 OK\nA: b\n\n", ParsedHead("HTTP/1.1", 200, "OK", [("A", "b")])),
        (
            b"HTTP/1.1 200 OK\r\nX-Empty:\r\n\r\n",
            ParsedHead("HTTP/1.1", 200, "OK", [("X-Empty", "")]),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Fold: one\r\n \t two\r\n\r\n",
            ParsedHead("HTTP/1.1", 200, "OK", [("X-Fold", "one two")]),
        ),
        (
            b"HTTP/1.1 200 caf\xe9\r\nX-Latin: \xe9t\xe9\r\n\r\n",
            ParsedHead("HTTP/1.1", 200, "caf\xe9", [("X-Latin", "\xe9t\xe9")]),
        ),
    ],
)
def test_a_head_parses(block: bytes, parsed: ParsedHead) -> None:
    assert parse_response_head(block) == parsed


@pytest.mark.parametrize(
    "block",
    [
        b"HTTP/1.1 two hundred OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 +20 OK\r\n\r\n",
        "HTTP/1.1 २०० OK\r\n\r\n".encode(),
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nSpace before : colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: no name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad\x7fName: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n continued first\r\n\r\n",
    ],
)
def test_a_malformed_head_is_refused(block: bytes) -> None:
    with pytest.raises(MalformedHead):
        parse_response_head(block)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_malformed_head(data: bytes) -> None:
    try:
        parse_response_head(b"HTTP/1.1 200 OK\r\n" + data + b"\r\n\r\n")
    except MalformedHead:
        pass
