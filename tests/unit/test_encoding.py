"""mediaproxy.http.encoding: Accept-Encoding negotiation and the compress-or-not decision."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.http.encoding import (
    Coding,
    encoded_fields,
    is_compressible,
    negotiate,
    parse_accept_encoding,
    plan_coding,
)

OFFERED = ("zstd", "gzip")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),  # no header: identity, even though RFC 9110 would allow anything
        ("", None),
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip, zstd", "zstd"),  # equal weights: the server's preference
        ("gzip, deflate, br, zstd", "zstd"),  # curl --compressed
        ("gzip, deflate, br", "gzip"),  # browsers without zstd
        ("zstd;q=0.5, gzip", "gzip"),
        ("zstd;q=0.5, gzip;q=0.6", "gzip"),
        ("gzip;q=0", None),
        ("gzip;q=0, *", "zstd"),
        ("*", "zstd"),
        ("*;q=0", None),
        ("*;q=0.1, zstd;q=0", "gzip"),
        ("identity", None),
        ("br", None),
        ("deflate", None),
        ("gzip;q=0.5, identity", None),  # identity explicitly preferred
        ("gzip, identity;q=0.5", "gzip"),
        ("gzip ; q=0.8 , zstd ; Q=0.9", "zstd"),
        ("gzip;q=1.0", "gzip"),
        ("gzip;q=1.001", None),  # malformed qvalue: the member is ignored
        ("gzip;q=abc, zstd;q=0.1", "zstd"),
        ("gzip;q=", None),
        ("gzip;level=9", "gzip"),  # unknown parameters are not ours to judge
        (",,gzip,,", "gzip"),
        ("gzip;q=0.1, gzip;q=0.9, zstd;q=0.5", "zstd"),  # the first listing of a coding counts
        ("g zip", None),
        ("gzip\x00", None),
    ],
)
def test_negotiate(header: str | None, expected: str | None) -> None:
    assert negotiate(header, OFFERED) == expected


def test_only_gzip_offered() -> None:
    assert negotiate("zstd, gzip;q=0.5", ("gzip",)) == "gzip"
    assert negotiate("zstd", ("gzip",)) is None


def test_parse_weights() -> None:
    assert parse_accept_encoding("gzip;q=0.5, br, *;q=0") == {"gzip": 0.5, "br": 1.0, "*": 0.0}


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/csv; charset=utf-8; header=present", True),
        ("text/event-stream", True),
        ("text/plain", True),
        ("TEXT/HTML; charset=UTF-8", True),
        ("application/json", True),
        ("application/x-ndjson", True),
        ("application/problem+json", True),
        ("application/atom+xml", True),
        ("image/svg+xml", True),
        ("video/mp4", False),
        ("audio/mpeg", False),
        ("image/png", False),
        ("application/gzip", False),
        ("application/zip", False),
        ("application/octet-stream", False),
        ("application/vnd.sqlite3", False),
        ("", False),
        (None, False),
    ],
)
def test_is_compressible(content_type: str | None, expected: bool) -> None:
    assert is_compressible(content_type) is expected


CSV = [("Content-Type", "text/csv; charset=utf-8")]


@pytest.mark.parametrize(
    ("status", "fields", "accept", "expected"),
    [
        (200, CSV, "gzip", Coding("gzip", varies=True)),
        (200, CSV, None, Coding(None, varies=True)),  # could have been compressed: Vary anyway
        (404, [("Content-Type", "application/json")], "zstd", Coding("zstd", varies=True)),
        (200, [("Content-Type", "video/mp4")], "gzip", Coding(None, varies=False)),
        (200, [], "gzip", Coding(None, varies=False)),  # no type: unknown, not compressed
        (206, CSV + [("Content-Range", "bytes 0-9/100")], "gzip", Coding(None, varies=False)),
        (200, CSV + [("Content-Encoding", "br")], "gzip", Coding(None, varies=False)),
        (204, CSV, "gzip", Coding(None, varies=False)),
        (304, CSV, "gzip", Coding(None, varies=False)),
        (101, CSV, "gzip", Coding(None, varies=False)),
    ],
)
def test_plan_coding(
    status: int, fields: list[tuple[str, str]], accept: str | None, expected: Coding
) -> None:
    assert plan_coding(status, fields, accept, OFFERED) == expected


def test_encoded_fields_for_a_compressed_response() -> None:
    fields = [
        ("Content-Type", "text/plain"),
        ("Content-Length", "1234"),
        ("ETag", '"abc"'),
        ("Vary", "Origin"),
    ]
    assert encoded_fields(fields, Coding("gzip", varies=True)) == [
        ("Content-Type", "text/plain"),
        ("ETag", 'W/"abc"'),
        ("Vary", "Origin"),
        ("Vary", "Accept-Encoding"),
        ("Content-Encoding", "gzip"),
    ]


def test_encoded_fields_keep_identity_responses_intact_but_vary() -> None:
    fields = [("Content-Type", "text/plain"), ("Content-Length", "4"), ("ETag", '"abc"')]
    assert encoded_fields(fields, Coding(None, varies=True)) == fields + [
        ("Vary", "Accept-Encoding")
    ]
    assert encoded_fields(fields, Coding(None, varies=False)) == fields


@pytest.mark.parametrize("vary", ["accept-encoding", "Origin, Accept-Encoding", "*"])
def test_vary_is_not_repeated(vary: str) -> None:
    fields = [("Content-Type", "text/plain"), ("Vary", vary)]
    assert encoded_fields(fields, Coding("gzip", varies=True)).count(("Vary", vary)) == 1
    assert ("Vary", "Accept-Encoding") not in encoded_fields(fields, Coding("gzip", True))


def test_weak_etag_stays_as_it_is() -> None:
    fields = [("Content-Type", "text/plain"), ("ETag", 'W/"abc"')]
    assert ("ETag", 'W/"abc"') in encoded_fields(fields, Coding("zstd", varies=True))


@given(
    st.one_of(
        st.none(),
        st.text(max_size=80),
        st.lists(
            st.sampled_from(
                [
                    "gzip",
                    "zstd",
                    "*",
                    "identity",
                    "br",
                    ";q=0",
                    ";q=0.5",
                    ";q=1",
                    ",",
                    " ",
                    ";",
                    "=",
                    "q",
                ]
            ),
            max_size=12,
        ).map("".join),
    )
)
def test_negotiate_never_raises_and_honours_refusals(header: str | None) -> None:
    chosen = negotiate(header, OFFERED)
    assert chosen in (None, *OFFERED)
    if chosen is not None and header is not None:
        weights = parse_accept_encoding(header)
        weight = weights.get(chosen, weights.get("*", 0.0))
        assert weight > 0, "a coding the client refused with q=0 was chosen"
        assert all(weight >= weights.get(c, weights.get("*", 0.0)) for c in OFFERED)


@given(st.text(max_size=80))
def test_parse_accept_encoding_weights_are_valid(header: str) -> None:
    for coding, weight in parse_accept_encoding(header).items():
        assert 0.0 <= weight <= 1.0
        assert coding == coding.lower() and "," not in coding and ";" not in coding


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        ("148", Coding(None, varies=True)),  # known and short: as it is, but a longer one varies
        ("1023", Coding(None, varies=True)),
        ("1024", Coding("gzip", varies=True)),
        (None, Coding("gzip", varies=True)),  # a stream: its length is not known
        ("1_0", Coding("gzip", varies=True)),  # not a length: not known either
    ],
)
def test_plan_coding_skips_bodies_known_to_be_short(length: str | None, expected: Coding) -> None:
    fields = CSV + ([("Content-Length", length)] if length is not None else [])
    assert plan_coding(200, fields, "gzip", OFFERED, min_bytes=1024) == expected
