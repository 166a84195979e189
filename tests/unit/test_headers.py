"""Which fields cross the gateway (RFC 9110 §7.6): tables, and properties for hostile input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.http.headers import (
    HOP_BY_HOP,
    connection_options,
    end_to_end,
    forward_request_headers,
    forward_response_headers,
    is_delimited,
    keeps_alive,
    may_retry,
    via_entry,
)

Fields = list[tuple[str, str]]


@pytest.mark.parametrize(
    "fields, kept",
    [
        ([("Content-Type", "a/b"), ("Connection", "close")], [("Content-Type", "a/b")]),
        (
            [
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Trailer", "X"),
                ("Upgrade", "h2c"),
                ("Transfer-Encoding", "chunked"),
                ("Proxy-Authorization", "Basic x"),
                ("Proxy-Authenticate", "Basic"),
                ("Proxy-Connection", "keep-alive"),
                ("X-A", "1"),
            ],
            [("X-A", "1")],
        ),
        # Every field the Connection field names goes, in any case, across several fields.
        (
            [
                ("Connection", "X-Secret, x-other"),
                ("connection", " X-Third ,"),
                ("x-secret", "1"),
                ("X-OTHER", "2"),
                ("X-Third", "3"),
                ("X-Kept", "4"),
            ],
            [("X-Kept", "4")],
        ),
        # Repeated end-to-end fields stay repeated and in order.
        (
            [("Set-Cookie", "a=1"), ("Connection", "keep-alive"), ("Set-Cookie", "b=2")],
            [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
        ),
        ([], []),
    ],
)
def test_end_to_end(fields: Fields, kept: Fields) -> None:
    assert end_to_end(fields) == kept


def test_connection_options_are_lowercased_list_members() -> None:
    assert connection_options([("Connection", "Close, ,X-Y"), ("Other", "z")]) == {"close", "x-y"}


def forward(fields: Fields, content_length: int | None = None) -> dict[str, list[str]]:
    forwarded = forward_request_headers(
        fields,
        client_ip="192.0.2.7",
        client_scheme="https",
        client_host="gw.example:8443",
        client_version="HTTP/1.0",
        upstream_host="origin:8000",
        content_length=content_length,
    )
    by_name: dict[str, list[str]] = {}
    for name, value in forwarded:
        by_name.setdefault(name.lower(), []).append(value)
    return by_name


@pytest.mark.parametrize(
    "fields, name, expected",
    [
        ([], "x-forwarded-for", ["192.0.2.7"]),
        (
            [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")],
            "x-forwarded-for",
            ["10.0.0.1, 10.0.0.2, 192.0.2.7"],
        ),
        (
            [("X-Forwarded-For", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2")],
            "x-forwarded-for",
            ["10.0.0.1, 10.0.0.2, 192.0.2.7"],
        ),
        ([("X-Forwarded-Proto", "http")], "x-forwarded-proto", ["https"]),
        ([("X-Forwarded-Host", "evil")], "x-forwarded-host", ["gw.example:8443"]),
        ([("Host", "gw.example:8443")], "host", ["origin:8000"]),
        ([], "via", ["1.0 mediaproxy"]),
        ([("Via", "1.1 a, 1.1 b")], "via", ["1.1 a, 1.1 b, 1.0 mediaproxy"]),
        # RFC 7239: the client's elements (when they parse) and ours, as X-Forwarded-For.
        ([], "forwarded", ['for=192.0.2.7;host="gw.example:8443";proto=https']),
        (
            [("Forwarded", 'for=10.0.0.1;proto=http, for="[2001:db8::1]"')],
            "forwarded",
            [
                'for=10.0.0.1;proto=http, for="[2001:db8::1]", '
                'for=192.0.2.7;host="gw.example:8443";proto=https'
            ],
        ),
        # One that does not parse could hide ours in its quoted string: it goes.
        (
            [("Forwarded", 'for="10.0.0.1')],
            "forwarded",
            ['for=192.0.2.7;host="gw.example:8443";proto=https'],
        ),
        (
            [("Forwarded", "for=1.2.3.4"), ("Forwarded", "for=5.6.7.8,,by")],
            "forwarded",
            ['for=192.0.2.7;host="gw.example:8443";proto=https'],
        ),
        ([("X-Real-IP", "10.9.9.9"), ("x-real-ip", "10.8.8.8")], "x-real-ip", ["192.0.2.7"]),
        ([("Expect", "100-continue")], "expect", None),
        ([("Range", "bytes=0-1")], "range", ["bytes=0-1"]),
        ([("If-None-Match", '"x"')], "if-none-match", ['"x"']),
        ([("Accept-Encoding", "gzip")], "accept-encoding", ["gzip"]),
    ],
)
def test_forwarded_request_fields(fields: Fields, name: str, expected: list[str] | None) -> None:
    assert forward(fields).get(name) == expected


@pytest.mark.parametrize(
    "fields, content_length, expected",
    [
        ([("Content-Length", "5")], 5, ["5"]),
        # A Connection field naming Content-Length must not change the framing.
        ([("Content-Length", "5"), ("Connection", "content-length")], 5, ["5"]),
        ([("Transfer-Encoding", "chunked")], None, None),
        ([("Content-Length", "5")], None, None),  # the gateway's word, not the field's
    ],
)
def test_framing_is_the_gateways_decision(
    fields: Fields, content_length: int | None, expected: list[str] | None
) -> None:
    forwarded = forward(fields, content_length)
    assert forwarded.get("content-length") == expected
    assert "transfer-encoding" not in forwarded


def test_response_fields_get_via_and_lose_hop_by_hop() -> None:
    fields = [
        ("Connection", "x-hop"),
        ("X-Hop", "1"),
        ("Via", "1.0 origin"),
        ("Content-Encoding", "gzip"),
        ("Transfer-Encoding", "chunked"),
    ]
    assert forward_response_headers(fields, upstream_version="HTTP/1.1") == [
        ("Content-Encoding", "gzip"),
        ("Via", "1.0 origin, 1.1 mediaproxy"),
    ]


@pytest.mark.parametrize(
    "version, expected",
    [
        ("HTTP/1.1", "1.1 mediaproxy"),
        ("HTTP/1.0", "1.0 mediaproxy"),
        ("junk", "1.1 mediaproxy"),
    ],
)
def test_via_entry(version: str, expected: str) -> None:
    assert via_entry(version) == expected


@pytest.mark.parametrize(
    "version, fields, expected",
    [
        ("HTTP/1.1", [], True),
        ("HTTP/1.1", [("Connection", "close")], False),
        ("HTTP/1.1", [("Connection", "X-Foo, Close")], False),
        ("HTTP/1.0", [], False),
        ("HTTP/1.0", [("Connection", "keep-alive")], True),
    ],
)
def test_keeps_alive(version: str, fields: Fields, expected: bool) -> None:
    assert keeps_alive(version, fields) is expected


@pytest.mark.parametrize(
    "method, status, fields, expected",
    [
        ("GET", 200, [("Content-Length", "3")], True),
        ("GET", 200, [("Transfer-Encoding", "chunked")], True),
        ("GET", 200, [], False),  # ends when the connection closes
        ("HEAD", 200, [], True),
        ("GET", 204, [], True),
        ("GET", 304, [], True),
    ],
)
def test_is_delimited(method: str, status: int, fields: Fields, expected: bool) -> None:
    assert is_delimited(method, status, fields) is expected


field_names = st.sampled_from(
    sorted(HOP_BY_HOP)
    + [
        "X-A",
        "x-b",
        "Set-Cookie",
        "Via",
        "X-Forwarded-For",
        "Content-Length",
        "Forwarded",
        "X-Real-IP",
    ]
)
hostile_fields = st.lists(
    st.tuples(
        st.one_of(field_names, st.text(min_size=1, max_size=12)),
        st.one_of(st.text(max_size=40), st.lists(field_names).map(", ".join)),
    )
)


@given(hostile_fields)
def test_nothing_hop_by_hop_or_connection_named_survives(fields: Fields) -> None:
    named = connection_options(fields)
    for name, _ in end_to_end(fields):
        assert name.lower() not in HOP_BY_HOP and name.lower() not in named


@given(hostile_fields, st.one_of(st.none(), st.integers(min_value=0, max_value=2**63)))
def test_forwarded_requests_have_exactly_one_of_each_field_we_set(
    fields: Fields, content_length: int | None
) -> None:
    forwarded = forward(fields, content_length)
    for name in (
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "forwarded",
        "x-real-ip",
    ):
        assert len(forwarded[name]) == 1
    assert forwarded["x-real-ip"] == ["192.0.2.7"]
    assert forwarded["forwarded"][0].endswith('for=192.0.2.7;host="gw.example:8443";proto=https')
    assert forwarded.get("content-length") == (
        None if content_length is None else [str(content_length)]
    )
    assert forwarded["x-forwarded-for"][0].endswith("192.0.2.7")


@pytest.mark.parametrize(
    "client_ip, client_host, element",
    [
        ("2001:db8::1", "gw", 'for="[2001:db8::1]";host=gw;proto=https'),
        ("", "gw", "for=unknown;host=gw;proto=https"),
        ("192.0.2.7", 'a"b\\c', 'for=192.0.2.7;host="a\\"b\\\\c";proto=https'),
        ("192.0.2.7", "a\x7fb", "for=192.0.2.7;proto=https"),  # no quoted-string holds DEL
    ],
)
def test_our_forwarded_element(client_ip: str, client_host: str, element: str) -> None:
    forwarded = forward_request_headers(
        [],
        client_ip=client_ip,
        client_scheme="https",
        client_host=client_host,
        client_version="HTTP/1.1",
        upstream_host="origin",
        content_length=None,
    )
    assert dict(forwarded)["Forwarded"] == element


@given(st.lists(st.text(max_size=30), max_size=3))
def test_our_forwarded_element_is_always_the_last_one_a_parser_sees(values: list[str]) -> None:
    fields = [("Forwarded", value) for value in values]
    forwarded = dict(
        forward_request_headers(
            fields,
            client_ip="192.0.2.7",
            client_scheme="http",
            client_host="gw",
            client_version="HTTP/1.1",
            upstream_host="origin",
            content_length=None,
        )
    )["Forwarded"]
    elements = [
        element.strip() for element in re.findall(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+', forwarded)
    ]
    assert elements[-1] == "for=192.0.2.7;host=gw;proto=http"


@pytest.mark.parametrize(
    "method, expected",
    [
        ("GET", True),
        ("HEAD", True),
        ("OPTIONS", True),
        ("TRACE", True),
        ("PUT", True),
        ("DELETE", True),
        ("POST", False),
        ("PATCH", False),
        ("CONNECT", False),
        ("get", False),
    ],
)
def test_only_idempotent_methods_may_be_retried(method: str, expected: bool) -> None:
    assert may_retry(method) is expected
