"""RFC 9111 rules as tables: what may be stored, what must bypass, how long it stays fresh."""

from __future__ import annotations

import pytest

from mediaproxy.http.caching import (
    cache_directives,
    freshness_lifetime_s,
    request_bypass,
    response_bypass,
    strong_etag,
)

ETAG = ("ETag", '"v1"')


@pytest.mark.parametrize(
    "value, directives",
    [
        ("max-age=60", {"max-age": "60"}),
        ('Max-Age="60", public', {"max-age": "60", "public": None}),
        (
            'no-cache="Set-Cookie, X-A", s-maxage=5',
            {"no-cache": "Set-Cookie, X-A", "s-maxage": "5"},
        ),
        (" , ,private", {"private": None}),
        ("max-age=1, max-age=2", {"max-age": "1"}),
    ],
)
def test_directives(value: str, directives: dict[str, str | None]) -> None:
    assert cache_directives([("Cache-Control", value)]) == directives


@pytest.mark.parametrize(
    "etags, strong",
    [
        (['"abc"'], '"abc"'),
        (['W/"abc"'], None),
        (["abc"], None),
        (['"a"b"'], None),
        (['"a"', '"b"'], None),
        ([], None),
        (['""'], '""'),
    ],
)
def test_strong_etag(etags: list[str], strong: str | None) -> None:
    assert strong_etag([("ETag", etag) for etag in etags]) == strong


@pytest.mark.parametrize(
    "method, fields, allowed, reason",
    [
        ("GET", [], False, None),
        ("HEAD", [], False, None),
        ("HEAD", [("Authorization", "Bearer x")], False, "Authorization on the request"),
        ("POST", [], False, "method POST"),
        ("GET", [("Authorization", "Bearer x")], False, "Authorization on the request"),
        ("GET", [("Authorization", "Bearer x")], True, None),
        ("GET", [("Cache-Control", "no-store")], False, "request no-store"),
        ("GET", [("Cache-Control", "no-cache")], False, None),
    ],
)
def test_request_bypass(
    method: str, fields: list[tuple[str, str]], allowed: bool, reason: str | None
) -> None:
    bypass = request_bypass(method, fields, authorization_allowed=allowed)
    assert (bypass.reason if bypass else None) == reason


LAST_MODIFIED = ("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")
PART_WITHOUT_ETAG = "part of an object with no ETag (Last-Modified validates whole ones)"


@pytest.mark.parametrize(
    "fields, reason",
    [
        ([ETAG], None),
        ([ETAG, ("Vary", "Accept-Encoding")], None),
        ([ETAG, ("Vary", "accept-encoding, Cookie")], "Vary: Cookie"),
        ([ETAG, ("Vary", "*")], "Vary: *"),
        ([ETAG, ("Cache-Control", "no-store")], "no-store"),
        ([ETAG, ("Cache-Control", "private, max-age=60")], "private"),
        ([("ETag", 'W/"v1"')], "no strong ETag"),
        ([LAST_MODIFIED], PART_WITHOUT_ETAG),
        ([("ETag", 'W/"v1"'), LAST_MODIFIED], PART_WITHOUT_ETAG),
        ([("Last-Modified", "yesterday")], "no strong ETag"),
        ([ETAG, ("Cache-Control", "no-cache")], None),  # stored, revalidated on every use
    ],
)
def test_response_bypass(fields: list[tuple[str, str]], reason: str | None) -> None:
    bypass = response_bypass(fields, whole=False)
    assert (bypass.reason if bypass else None) == reason


@pytest.mark.parametrize(
    "fields, reason",
    [
        ([ETAG], None),
        ([LAST_MODIFIED], None),  # a whole object read in one response
        ([LAST_MODIFIED, ("Cache-Control", "no-store")], "no-store"),
        ([("Last-Modified", "yesterday")], "no strong ETag"),
        ([("ETag", 'W/"v1"')], "no strong ETag"),
    ],
)
def test_response_bypass_of_a_whole_object(
    fields: list[tuple[str, str]], reason: str | None
) -> None:
    bypass = response_bypass(fields, whole=True)
    assert (bypass.reason if bypass else None) == reason


DATE = ("Date", "Thu, 01 Jan 2015 00:00:00 GMT")


@pytest.mark.parametrize(
    "fields, lifetime",
    [
        ([], 120.0),
        ([("Cache-Control", "max-age=60")], 60.0),
        ([("Cache-Control", "max-age=60, s-maxage=5")], 5.0),
        ([("Cache-Control", "max-age=+60")], 0.0),
        ([("Cache-Control", "max-age=99999999999999")], float(2**31)),
        ([("Cache-Control", "no-cache, max-age=60")], 0.0),
        ([("Cache-Control", 'no-cache="Set-Cookie", max-age=60')], 60.0),
        ([DATE, ("Expires", "Thu, 01 Jan 2015 00:01:40 GMT")], 100.0),
        ([DATE, ("Expires", "Wed, 31 Dec 2014 00:00:00 GMT")], 0.0),
        ([DATE, ("Expires", "0")], 0.0),
        ([("Expires", "Thu, 01 Jan 2015 00:01:40 GMT")], 0.0),
        ([DATE, ("Expires", "Thu, 01 Jan 2015 00:01:40 GMT"), ("Cache-Control", "max-age=7")], 7.0),
    ],
)
def test_freshness(fields: list[tuple[str, str]], lifetime: float) -> None:
    assert freshness_lifetime_s(fields, default_s=120.0) == lifetime
