"""mediaproxy.http.conditional: validators, HTTP-dates and RFC 9110 §13 preconditions."""

from __future__ import annotations

import calendar
import email.utils
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tornado.httputil import HTTPHeaders

from mediaproxy.http.conditional import (
    Outcome,
    Validators,
    evaluate,
    format_http_date,
    if_range_allows_partial,
    make_etag,
    parse_http_date,
)

PROCEED = Outcome.PROCEED
NOT_MODIFIED = Outcome.NOT_MODIFIED
FAILED = Outcome.PRECONDITION_FAILED

# RFC 9110's running example moment, Sun, 06 Nov 1994 08:49:37 GMT.
MODIFIED_S = 784111777
MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"  # one second before the modification
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"
CURRENT = Validators(etag='"abc"', last_modified_s=MODIFIED_S)


# ---------------------------------------------------------------------------
# evaluate: RFC 9110 §13.2.2, one row per rule
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, PROCEED),
        # Step 1, If-Match: strong comparison, "*", lists.
        ("GET", {"If-Match": '"abc"'}, PROCEED),
        ("GET", {"If-Match": '"xyz"'}, FAILED),
        ("GET", {"If-Match": 'W/"abc"'}, FAILED),
        ("GET", {"If-Match": '"xyz", "abc"'}, PROCEED),
        ("GET", {"If-Match": "*"}, PROCEED),
        ("PUT", {"If-Match": '"xyz"'}, FAILED),
        # Step 2, If-Unmodified-Since: only without If-Match.
        ("GET", {"If-Unmodified-Since": EARLIER}, FAILED),
        ("GET", {"If-Unmodified-Since": MODIFIED}, PROCEED),
        ("GET", {"If-Unmodified-Since": LATER}, PROCEED),
        ("GET", {"If-Unmodified-Since": "yesterday"}, PROCEED),
        ("GET", {"If-Unmodified-Since": f"{EARLIER}, {EARLIER}"}, PROCEED),
        ("GET", {"If-Match": '"abc"', "If-Unmodified-Since": EARLIER}, PROCEED),
        ("GET", {"If-Match": '"xyz"', "If-Unmodified-Since": LATER}, FAILED),
        # Step 3, If-None-Match: weak comparison, "*", 304 only for GET/HEAD.
        ("GET", {"If-None-Match": '"abc"'}, NOT_MODIFIED),
        ("HEAD", {"If-None-Match": '"abc"'}, NOT_MODIFIED),
        ("GET", {"If-None-Match": 'W/"abc"'}, NOT_MODIFIED),
        ("GET", {"If-None-Match": '"xyz", W/"abc"'}, NOT_MODIFIED),
        ("GET", {"If-None-Match": '"xyz"'}, PROCEED),
        ("GET", {"If-None-Match": "*"}, NOT_MODIFIED),
        ("POST", {"If-None-Match": '"abc"'}, FAILED),
        ("PUT", {"If-None-Match": "*"}, FAILED),
        ("DELETE", {"If-None-Match": 'W/"abc"'}, FAILED),
        # Methods are case-sensitive: "get" is not GET.
        ("get", {"If-None-Match": '"abc"'}, FAILED),
        # Steps 1-2 run before step 3.
        ("GET", {"If-Match": '"xyz"', "If-None-Match": '"abc"'}, FAILED),
        ("GET", {"If-Unmodified-Since": EARLIER, "If-None-Match": '"abc"'}, FAILED),
        ("GET", {"If-Match": '"abc"', "If-None-Match": '"abc"'}, NOT_MODIFIED),
        # Step 4, If-Modified-Since: GET/HEAD only, and only without If-None-Match.
        ("GET", {"If-Modified-Since": MODIFIED}, NOT_MODIFIED),
        ("HEAD", {"If-Modified-Since": LATER}, NOT_MODIFIED),
        ("GET", {"If-Modified-Since": EARLIER}, PROCEED),
        ("GET", {"If-Modified-Since": "Sunday, 06-Nov-94 08:49:37 GMT"}, NOT_MODIFIED),
        ("GET", {"If-Modified-Since": "Sun Nov  6 08:49:37 1994"}, NOT_MODIFIED),
        ("GET", {"If-Modified-Since": "not a date"}, PROCEED),
        ("GET", {"If-Modified-Since": MODIFIED.lower()}, PROCEED),
        ("GET", {"If-Modified-Since": f"{MODIFIED}, {MODIFIED}"}, PROCEED),
        ("GET", {"If-Modified-Since": ""}, PROCEED),
        ("POST", {"If-Modified-Since": LATER}, PROCEED),
        # If-None-Match matches and If-Modified-Since says modified: INM decides.
        ("GET", {"If-None-Match": '"abc"', "If-Modified-Since": EARLIER}, NOT_MODIFIED),
        # If-None-Match does not match and If-Modified-Since says not
        # modified: IMS is ignored whenever INM is present, so 200.
        ("GET", {"If-None-Match": '"xyz"', "If-Modified-Since": LATER}, PROCEED),
        ("GET", {"If-None-Match": "garbage", "If-Modified-Since": LATER}, PROCEED),
        # All four at once, all passing except INM.
        (
            "GET",
            {
                "If-Match": "*",
                "If-Unmodified-Since": EARLIER,
                "If-None-Match": '"abc"',
                "If-Modified-Since": EARLIER,
            },
            NOT_MODIFIED,
        ),
    ],
)
def test_precedence(method: str, headers: dict[str, str], expected: Outcome) -> None:
    assert evaluate(method, headers, CURRENT) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"if-none-match": '"abc"'}, NOT_MODIFIED),
        ({"IF-NONE-MATCH": '"abc"'}, NOT_MODIFIED),
        ({"iF-mAtCh": '"xyz"'}, FAILED),
        ({"if-modified-since": MODIFIED}, NOT_MODIFIED),
        ({"if-unmodified-since": EARLIER}, FAILED),
    ],
)
def test_header_names_are_case_insensitive(headers: dict[str, str], expected: Outcome) -> None:
    assert evaluate("GET", headers, CURRENT) == expected


def test_tornado_headers() -> None:
    headers = HTTPHeaders()
    headers.add("If-None-Match", '"xyz"')
    headers.add("If-None-Match", '"abc"')  # a second field line joins the list
    assert evaluate("GET", headers, CURRENT) == NOT_MODIFIED


@pytest.mark.parametrize(
    ("validators", "headers", "expected"),
    [
        # No entity tag: a list never matches, "*" still means "exists".
        (Validators(None, MODIFIED_S), {"If-Match": '"abc"'}, FAILED),
        (Validators(None, MODIFIED_S), {"If-Match": "*"}, PROCEED),
        (Validators(None, MODIFIED_S), {"If-None-Match": '"abc"'}, PROCEED),
        (Validators(None, MODIFIED_S), {"If-None-Match": "*"}, NOT_MODIFIED),
        # No modification date: date preconditions are ignored.
        (Validators('"abc"', None), {"If-Modified-Since": LATER}, PROCEED),
        (Validators('"abc"', None), {"If-Unmodified-Since": EARLIER}, PROCEED),
        # A weak current tag: never strongly equal, weakly equal to either form.
        (Validators('W/"abc"', MODIFIED_S), {"If-Match": '"abc"'}, FAILED),
        (Validators('W/"abc"', MODIFIED_S), {"If-Match": 'W/"abc"'}, FAILED),
        (Validators('W/"abc"', MODIFIED_S), {"If-None-Match": '"abc"'}, NOT_MODIFIED),
        (Validators('W/"abc"', MODIFIED_S), {"If-None-Match": 'W/"abc"'}, NOT_MODIFIED),
        # A comma is an etagc: inside quotes it is part of the tag.
        (Validators('"a,b"', None), {"If-None-Match": '"a,b"'}, NOT_MODIFIED),
        (Validators('"a,b"', None), {"If-None-Match": '"a", "b"'}, PROCEED),
        (Validators('"a"', None), {"If-None-Match": '"a,b"'}, PROCEED),
    ],
)
def test_validators(validators: Validators, headers: dict[str, str], expected: Outcome) -> None:
    assert evaluate("GET", headers, validators) == expected


@pytest.mark.parametrize(
    "value",
    [
        "abc",  # unquoted
        '"abc',  # unterminated
        'abc"',
        'w/"abc"',  # W/ is case-sensitive
        'W/ "abc"',
        "W/abc",
        '"abc" "abc"',  # no comma
        '"abc"x',
        '*, "abc"',  # "*" stands alone
        '"ab c"',  # SP is not an etagc
        '"ab\x7fc"',
        '"ab\u0100c"',  # not obs-text: no header byte decodes to it
    ],
)
def test_malformed_lists_match_nothing(value: str) -> None:
    # Fail closed: If-Match refuses, If-None-Match serves the full 200.
    assert evaluate("GET", {"If-Match": value}, CURRENT) == FAILED
    assert evaluate("GET", {"If-None-Match": value}, CURRENT) == PROCEED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"abc"', NOT_MODIFIED),
        (' "abc" ', NOT_MODIFIED),
        (',"abc",', NOT_MODIFIED),
        (' , , "xyz" ,\t"abc"', NOT_MODIFIED),
        ("", PROCEED),  # an empty list
        (" , ", PROCEED),
        ('""', PROCEED),
    ],
)
def test_list_syntax(value: str, expected: Outcome) -> None:
    assert evaluate("GET", {"If-None-Match": value}, CURRENT) == expected


@pytest.mark.parametrize("etag", ["abc", '"abc', 'w/"abc"', '"abc", "def"', "*", "", '"a b"'])
def test_validators_refuse_a_malformed_etag(etag: str) -> None:
    with pytest.raises(ValueError):
        Validators(etag=etag, last_modified_s=None)


def test_empty_tag_is_a_tag() -> None:
    assert evaluate("GET", {"If-None-Match": '""'}, Validators('""', None)) == NOT_MODIFIED


def test_obs_text_in_a_tag() -> None:
    # Tornado decodes header bytes as latin-1, so a UTF-8 tag arrives as obs-text.
    tag = '"caf\xc3\xa9"'
    assert evaluate("GET", {"If-None-Match": tag}, Validators(tag, None)) == NOT_MODIFIED


# ---------------------------------------------------------------------------
# If-Range: RFC 9110 §13.1.5
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "validators", "expected"),
    [
        (None, CURRENT, True),
        ('"abc"', CURRENT, True),
        (' "abc" ', CURRENT, True),
        ('"xyz"', CURRENT, False),
        # A weak tag is never strongly equal, on either side.
        ('W/"abc"', CURRENT, False),
        ('"abc"', Validators('W/"abc"', MODIFIED_S), False),
        ('W/"abc"', Validators('W/"abc"', MODIFIED_S), False),
        # If-Range holds one validator, not a list.
        ('"abc", "xyz"', CURRENT, False),
        ('"abc"', Validators(None, MODIFIED_S), False),
        # A date matches only exactly.
        (MODIFIED, CURRENT, True),
        ("Sunday, 06-Nov-94 08:49:37 GMT", CURRENT, True),
        ("Sun Nov  6 08:49:37 1994", CURRENT, True),
        (EARLIER, CURRENT, False),
        (LATER, CURRENT, False),
        (MODIFIED, Validators('"abc"', None), False),
        # Anything else: serve the full 200.
        ("", CURRENT, False),
        ("abc", CURRENT, False),
        ("*", CURRENT, False),
        ('"abc', CURRENT, False),
        (MODIFIED.upper(), CURRENT, False),
    ],
)
def test_if_range(if_range: str | None, validators: Validators, expected: bool) -> None:
    assert if_range_allows_partial(if_range, validators) is expected


# ---------------------------------------------------------------------------
# HTTP-date: RFC 9110 §5.6.7
# ---------------------------------------------------------------------------

NOW_2026 = calendar.timegm((2026, 6, 1, 0, 0, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The three formats from §5.6.7, all the same moment.
        ("Sun, 06 Nov 1994 08:49:37 GMT", MODIFIED_S),
        ("Sunday, 06-Nov-94 08:49:37 GMT", MODIFIED_S),
        ("Sun Nov  6 08:49:37 1994", MODIFIED_S),
        ("Sun Nov 06 08:49:37 1994", MODIFIED_S),
        ("  Sun, 06 Nov 1994 08:49:37 GMT\t", MODIFIED_S),  # field-value OWS
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
        ("Wed, 31 Dec 1969 23:59:59 GMT", -1),
        ("Tue, 29 Feb 2000 00:00:00 GMT", 951782400),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799),
        # A leap second is the next minute's first second in POSIX time.
        ("Sat, 31 Dec 2016 23:59:60 GMT", 1483228800),
        # The day name is not cross-checked against the date.
        ("Mon, 06 Nov 1994 08:49:37 GMT", MODIFIED_S),
        # Two-digit years, judged from mid-2026: 76 is 50 years ahead, 77 is 51.
        ("Wednesday, 01-Jan-76 00:00:00 GMT", calendar.timegm((2076, 1, 1, 0, 0, 0))),
        ("Saturday, 01-Jan-77 00:00:00 GMT", calendar.timegm((1977, 1, 1, 0, 0, 0))),
        ("Saturday, 01-Jan-00 00:00:00 GMT", calendar.timegm((2000, 1, 1, 0, 0, 0))),
        ("Saturday, 01-Jan-26 00:00:00 GMT", calendar.timegm((2026, 1, 1, 0, 0, 0))),
    ],
)
def test_parse_http_date(value: str, expected: int) -> None:
    assert parse_http_date(value, now_s=NOW_2026) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "784111777",
        "sun, 06 Nov 1994 08:49:37 GMT",  # case-sensitive
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06-Nov-1994 08:49:37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",  # rfc850 wants the long day name
        "Sun Nov 6 08:49:37 1994",  # asctime pads a one-digit day with SP
        "Sun Nov  6 08:49:37 1994 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMTX",
        # Digits that are not ASCII digits.
        "Sun, ٠٦ Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov １９９４ 08:49:37 GMT",
        # Days, hours, minutes and seconds that do not exist.
        "Mon, 00 Jan 2024 00:00:00 GMT",
        "Thu, 31 Apr 2024 00:00:00 GMT",
        "Thu, 29 Feb 1900 00:00:00 GMT",
        "Sun, 30 Feb 2000 00:00:00 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sat, 01 Jan 0000 00:00:00 GMT",
    ],
)
def test_parse_http_date_rejects(value: str) -> None:
    assert parse_http_date(value, now_s=NOW_2026) is None


@pytest.mark.parametrize(
    ("epoch_s", "expected"),
    [
        (MODIFIED_S, MODIFIED),
        (MODIFIED_S + 0.999, MODIFIED),  # floored: the second the mtime falls in
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (-0.5, "Wed, 31 Dec 1969 23:59:59 GMT"),
        (253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        (-62135596800, "Mon, 01 Jan 0001 00:00:00 GMT"),
    ],
)
def test_format_http_date(epoch_s: float, expected: str) -> None:
    assert format_http_date(epoch_s) == expected


@pytest.mark.parametrize(
    "epoch_s", [float("nan"), float("inf"), -float("inf"), 253402300800, -62135596801, 1e300]
)
def test_format_http_date_rejects_what_it_cannot_express(epoch_s: float) -> None:
    with pytest.raises(ValueError):
        format_http_date(epoch_s)


# ---------------------------------------------------------------------------
# Entity tags
# ---------------------------------------------------------------------------


def test_make_etag_example() -> None:
    assert make_etag(0x1A2B, 0x3C, 0x4D5E) == '"1a2b-3c-4d5e"'


@pytest.mark.parametrize(("inode", "size"), [(-1, 0), (0, -1)])
def test_make_etag_rejects_negative_metadata(inode: int, size: int) -> None:
    with pytest.raises(ValueError):
        make_etag(inode, size, 0)


ETAG_SHAPE = re.compile(r'"([0-9a-f]+)-([0-9a-f]+)-(-?[0-9a-f]+)"')


@given(
    inode=st.integers(min_value=0, max_value=2**64),
    size=st.integers(min_value=0, max_value=2**63),
    mtime_ns=st.integers(min_value=-(2**63), max_value=2**63),
)
def test_make_etag_is_strong_and_injective(inode: int, size: int, mtime_ns: int) -> None:
    etag = make_etag(inode, size, mtime_ns)
    # Strong, and usable in the headers that compare it.
    assert evaluate("GET", {"If-Match": etag}, Validators(etag, None)) == PROCEED
    assert if_range_allows_partial(etag, Validators(etag, None))
    # Decodable back to its inputs, so two different files never share one.
    match = ETAG_SHAPE.fullmatch(etag)
    assert match is not None
    assert (int(match[1], 16), int(match[2], 16), int(match[3], 16)) == (inode, size, mtime_ns)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

moments = st.integers(min_value=-62135596800, max_value=253402300799)


@given(epoch_s=moments)
def test_format_then_parse_round_trips(epoch_s: int) -> None:
    assert parse_http_date(format_http_date(epoch_s)) == epoch_s


@given(epoch_s=st.integers(min_value=0, max_value=2**34))
def test_format_agrees_with_the_stdlib(epoch_s: int) -> None:
    assert format_http_date(epoch_s) == email.utils.formatdate(epoch_s, usegmt=True)


@given(value=st.text(), now_s=st.integers(min_value=0, max_value=2**35))
@example(value="Sunday, 06-Nov-94 08:49:37 GMT", now_s=0)
def test_parse_http_date_never_raises(value: str, now_s: int) -> None:
    result = parse_http_date(value, now_s=now_s)
    assert result is None or isinstance(result, int)


# Hostile entity-tag lists: the characters their grammar turns on.
tag_text = st.text(alphabet='"W/w,* \t\r\nabc!#~\x7f\x80\xff\u0100\U0001f600', max_size=40)
header_names = st.sampled_from(
    ["If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "if-match"]
)
hostile_headers = st.dictionaries(header_names, tag_text | st.text(max_size=40), max_size=5)
validators = st.builds(
    Validators,
    etag=st.none() | st.sampled_from(['"abc"', 'W/"abc"', '""', '"a,b"', '"W/"', '"\x80"']),
    last_modified_s=st.none() | st.integers(min_value=-(2**40), max_value=2**40),
)
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "get", ""])


@given(method=methods, headers=hostile_headers, current=validators)
def test_evaluate_never_raises(method: str, headers: dict[str, str], current: Validators) -> None:
    outcome = evaluate(method, headers, current)
    assert isinstance(outcome, Outcome)
    if method not in ("GET", "HEAD"):
        assert outcome is not NOT_MODIFIED


@given(if_range=st.none() | tag_text | st.text(), current=validators)
def test_if_range_never_raises(if_range: str | None, current: Validators) -> None:
    assert isinstance(if_range_allows_partial(if_range, current), bool)


@given(
    method=methods,
    headers=hostile_headers,
    current=validators,
    ims=st.sampled_from([EARLIER, MODIFIED, LATER, "junk"]),
)
def test_if_modified_since_is_ignored_beside_if_none_match(
    method: str, headers: dict[str, str], current: Validators, ims: str
) -> None:
    headers = {
        name: value for name, value in headers.items() if name.lower() != "if-modified-since"
    }
    headers.setdefault("If-None-Match", '"abc"')
    assert evaluate(method, {**headers, "If-Modified-Since": ims}, current) == evaluate(
        method, headers, current
    )


@given(
    method=methods,
    headers=hostile_headers,
    current=validators,
    ius=st.sampled_from([EARLIER, MODIFIED, LATER, "junk"]),
)
def test_if_unmodified_since_is_ignored_beside_if_match(
    method: str, headers: dict[str, str], current: Validators, ius: str
) -> None:
    headers = {
        name: value for name, value in headers.items() if name.lower() != "if-unmodified-since"
    }
    if not any(name.lower() == "if-match" for name in headers):
        headers["If-Match"] = "*"
    assert evaluate(method, {**headers, "If-Unmodified-Since": ius}, current) == evaluate(
        method, headers, current
    )


@given(
    tags=st.lists(st.text(alphabet="abc,!#~W/\x80", max_size=8), min_size=1, max_size=6),
    data=st.data(),
)
def test_a_listed_tag_is_always_found(tags: list[str], data: st.DataObject) -> None:
    # Well-formed lists, commas inside quotes included, find each member.
    quoted = [f'"{tag}"' for tag in tags]
    separator = data.draw(st.sampled_from([",", ", ", " ,\t", ",,"]))
    header = separator.join(quoted)
    for tag in quoted:
        assert evaluate("GET", {"If-None-Match": header}, Validators(tag, None)) == NOT_MODIFIED
        assert evaluate("GET", {"If-Match": header}, Validators(tag, None)) == PROCEED
