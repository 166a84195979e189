"""mediaproxy.http.ranges: Range header parsing and multipart/byteranges framing."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import re
import time

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from mediaproxy.http.ranges import (
    COALESCE_GAP_BYTES,
    MAX_RANGES,
    ByteRange,
    FullContent,
    MultipartPlan,
    NotSatisfiable,
    PartialContent,
    parse_range,
    plan_multipart,
)

SIZE = 10_000  # the representation length RFC 9110 §14.1.2 uses in its examples


def partial(*spans: tuple[int, int]) -> PartialContent:
    return PartialContent(tuple(ByteRange(start, stop) for start, stop in spans))


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # RFC 9110 §14.1.2 examples, against a 10000-byte representation.
        ("bytes=0-499", partial((0, 500))),
        ("bytes=500-999", partial((500, 1000))),
        ("bytes=-500", partial((9500, 10_000))),
        ("bytes=9500-", partial((9500, 10_000))),
        ("bytes=0-0,-1", partial((0, 1), (9999, 10_000))),
        ("bytes= 0-999, 4500-5499, -1000", partial((0, 1000), (4500, 5500), (9000, 10_000))),
        ("bytes=500-600,601-999", partial((500, 1000))),
        ("bytes=500-700,601-999", partial((500, 1000))),
        # The final byte, addressed every way there is.
        ("bytes=9999-9999", partial((9999, 10_000))),
        ("bytes=9999-", partial((9999, 10_000))),
        ("bytes=-1", partial((9999, 10_000))),
        ("bytes=0-9999", partial((0, 10_000))),
        # last-pos at or past the end is clamped to the end.
        ("bytes=0-10000", partial((0, 10_000))),
        ("bytes=9000-99999999", partial((9000, 10_000))),
        # A suffix longer than the representation is all of it.
        ("bytes=-10000", partial((0, 10_000))),
        ("bytes=-10001", partial((0, 10_000))),
        ("bytes=0-0", partial((0, 1))),
        # Leading zeros are still 1*DIGIT.
        ("bytes=0010-0019", partial((10, 20))),
        # The unit is case-insensitive.
        ("BYTES=0-1", partial((0, 2))),
        ("Bytes=0-1", partial((0, 2))),
        # Whitespace around the field value and around commas; empty elements.
        ("  bytes=0-1  ", partial((0, 2))),
        ("bytes=0-1 ,\t200-300", partial((0, 2), (200, 301))),
        ("bytes=0-1,,200-300", partial((0, 2), (200, 301))),
        ("bytes=,0-1,", partial((0, 2))),
        # Unsatisfiable specs are dropped when another is satisfiable.
        ("bytes=20000-,0-1", partial((0, 2))),
        ("bytes=-0,0-1", partial((0, 2))),
    ],
)
def test_satisfiable(header: str, expected: PartialContent) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Overlapping, in any order.
        ("bytes=0-99,50-149", partial((0, 150))),
        ("bytes=50-149,0-99", partial((0, 150))),
        ("bytes=0-999,100-199", partial((0, 1000))),
        ("bytes=-100,9950-", partial((9900, 10_000))),
        # Adjacent.
        ("bytes=0-99,100-199", partial((0, 200))),
        # Near: a gap smaller than a part header is not worth a part.
        (f"bytes=0-99,{100 + COALESCE_GAP_BYTES - 1}-300", partial((0, 301))),
        # Far enough apart to stay separate parts.
        (
            f"bytes=0-99,{100 + COALESCE_GAP_BYTES}-300",
            partial((0, 100), (100 + COALESCE_GAP_BYTES, 301)),
        ),
        # Sorted by start, whatever the request order.
        ("bytes=5000-5099,0-99,2000-2099", partial((0, 100), (2000, 2100), (5000, 5100))),
        # The same range twice is one range.
        ("bytes=0-99,0-99", partial((0, 100))),
    ],
)
def test_sorted_and_coalesced(header: str, expected: PartialContent) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10000-",
        "bytes=10000-10500",
        "bytes=99999999999999999999999999999-",
        "bytes=-0",
        "bytes=-00",
        "bytes=10000-,20000-,-0",
    ],
)
def test_not_satisfiable(header: str) -> None:
    result = parse_range(header, SIZE)
    assert result == NotSatisfiable(SIZE)
    assert isinstance(result, NotSatisfiable)
    assert result.content_range() == "bytes */10000"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no range"),
        ("", "malformed"),
        ("   ", "malformed"),
        ("bytes", "malformed"),
        ("=0-1", "malformed"),
        ("bytes=", "malformed"),
        ("bytes=,", "malformed"),
        ("bytes=,,", "malformed"),
        # The unit is a token: no whitespace inside it or before "=".
        ("bytes =0-1", "malformed"),
        ("bytes = 0-1", "malformed"),
        ("by tes=0-1", "malformed"),
        ("bytés=0-1", "malformed"),
        # Strict digits: what int() or isdigit() would let through.
        ("bytes=+5-10", "malformed"),
        ("bytes=0-+5", "malformed"),
        ("bytes=1_0-20", "malformed"),
        ("bytes=٣-5", "malformed"),
        ("bytes=0-٣", "malformed"),
        ("bytes=-٣", "malformed"),
        ("bytes=０-1", "malformed"),
        ("bytes=0x10-20", "malformed"),
        ("bytes=1.5-2", "malformed"),
        ("bytes=1e3-", "malformed"),
        ("bytes=-+5", "malformed"),
        ("bytes=--5", "malformed"),
        ("bytes=-", "malformed"),
        ("bytes=5", "malformed"),
        ("bytes=0-1-2", "malformed"),
        # No whitespace inside a spec, and only SP/HTAB count as OWS.
        ("bytes=0 -1", "malformed"),
        ("bytes=0- 1", "malformed"),
        ("bytes=1 0-20", "malformed"),
        ("bytes=0-1,\r\n2-3", "malformed"),
        ("bytes=0-1,\x0b2-3", "malformed"),
        ("bytes=\u00a00-1", "malformed"),
        ("bytes=0-1;2-3", "malformed"),
        # "An int-range is invalid if the last-pos value is present and less
        # than the first-pos", and one invalid spec spoils the header, even
        # next to satisfiable or unsatisfiable ones.
        ("bytes=5-3", "malformed"),
        ("bytes=0-1,5-3", "malformed"),
        ("bytes=20000-,5-3", "malformed"),
        ("bytes=0-1,junk", "malformed"),
        # Unknown units are ignored, whatever follows them.
        ("items=0-1", "unknown unit"),
        ("none=", "unknown unit"),
        ("bytesx=0-1", "unknown unit"),
        ("pages=anything at all", "unknown unit"),
    ],
)
def test_full_content(header: str | None, reason: str) -> None:
    assert parse_range(header, SIZE) == FullContent(reason)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-", NotSatisfiable(0)),
        ("bytes=0-0", NotSatisfiable(0)),
        ("bytes=-0", NotSatisfiable(0)),
        # §14.1.2: "When a selected representation has zero length, the only
        # satisfiable form of range-spec in a GET request is a suffix-range
        # with a non-zero suffix-length." Not a 416, but no 206 can carry it.
        ("bytes=-1", FullContent("empty representation")),
        ("bytes=0-,-5", FullContent("empty representation")),
        ("bytes=-99999999999999999999999", FullContent("empty representation")),
        ("bytes=5-3", FullContent("malformed")),
        (None, FullContent("no range")),
    ],
)
def test_empty_representation(header: str | None, expected: object) -> None:
    assert parse_range(header, 0) == expected


def test_single_byte_representation() -> None:
    assert parse_range("bytes=0-0", 1) == partial((0, 1))
    assert parse_range("bytes=-1", 1) == partial((0, 1))
    assert parse_range("bytes=1-", 1) == NotSatisfiable(1)


def specs_header(count: int) -> str:
    # Far apart, so coalescing could not hide a miscount.
    return "bytes=" + ",".join(f"{index * 200}-{index * 200 + 9}" for index in range(count))


def test_max_ranges_is_inclusive() -> None:
    result = parse_range(specs_header(MAX_RANGES), 1_000_000)
    assert isinstance(result, PartialContent)
    assert len(result.ranges) == MAX_RANGES


def test_one_range_too_many_is_served_in_full() -> None:
    assert parse_range(specs_header(MAX_RANGES + 1), 1_000_000) == FullContent("too many ranges")


def test_ranges_are_counted_before_coalescing() -> None:
    # 17 copies of one range would coalesce into one; still too many.
    header = "bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1))
    assert parse_range(header, SIZE) == FullContent("too many ranges")


def test_empty_elements_do_not_count() -> None:
    header = "bytes=" + ",".join(["0-0"] * MAX_RANGES) + ",,,,"
    assert parse_range(header, SIZE) == partial((0, 1))


@pytest.mark.parametrize("max_ranges", [1, 2, 100])
def test_max_ranges_override(max_ranges: int) -> None:
    assert isinstance(
        parse_range(specs_header(max_ranges), 1_000_000, max_ranges=max_ranges), PartialContent
    )
    assert parse_range(
        specs_header(max_ranges + 1), 1_000_000, max_ranges=max_ranges
    ) == FullContent("too many ranges")


def test_a_hostile_header_is_refused_cheaply() -> None:
    header = "bytes=" + ",".join(f"{index}-{index}" for index in range(10_000))
    started = time.perf_counter()
    assert parse_range(header, SIZE) == FullContent("too many ranges")
    # Generous: the point is "a split", not "10,000 parses and a sort".
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=" + "9" * 1000 + "-", NotSatisfiable(SIZE)),
        ("bytes=0-" + "9" * 1000, partial((0, SIZE))),
        ("bytes=-" + "9" * 1000, partial((0, SIZE))),
        # Past CPython's 4300-digit int() limit.
        ("bytes=" + "9" * 100_000 + "-", NotSatisfiable(SIZE)),
        ("bytes=0-" + "9" * 100_000, partial((0, SIZE))),
        ("bytes=-" + "9" * 100_000, partial((0, SIZE))),
        # Validity is still decided exactly, beyond any int.
        ("bytes=" + "9" * 5000 + "-" + "1" + "0" * 4999, FullContent("malformed")),
        ("bytes=" + "1" + "0" * 4999 + "-" + "9" * 5000, NotSatisfiable(SIZE)),
        ("bytes=" + "0" * 5000 + "1-" + "9" * 4, partial((1, SIZE))),
    ],
)
def test_huge_numerals(header: str, expected: object) -> None:
    # RFC 9110 §14.1.2: "recipients MUST anticipate potentially large decimal
    # numerals and prevent parsing errors due to integer conversion overflows."
    assert parse_range(header, SIZE) == expected


def test_negative_size_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        parse_range("bytes=0-1", -1)


# ---------------------------------------------------------------------------
# ByteRange and Content-Range
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("byte_range", "size", "content_range"),
    [
        (ByteRange(0, 100), 1000, "bytes 0-99/1000"),
        (ByteRange(999, 1000), 1000, "bytes 999-999/1000"),
        (ByteRange(0, 1), 1, "bytes 0-0/1"),
        (ByteRange(0, 2**63), 2**63, f"bytes 0-{2**63 - 1}/{2**63}"),
    ],
)
def test_content_range(byte_range: ByteRange, size: int, content_range: str) -> None:
    assert byte_range.content_range(size) == content_range


@pytest.mark.parametrize(
    ("ranges", "summary"),
    [
        ((ByteRange(0, 100),), "bytes 0-99/1000"),  # one range: its Content-Range
        (
            (ByteRange(0, 1), ByteRange(500, 600), ByteRange(999, 1000)),
            "bytes 0-0,500-599,999-999/1000",
        ),
    ],
)
def test_partial_content_summary_lists_every_range(
    ranges: tuple[ByteRange, ...], summary: str
) -> None:
    assert PartialContent(ranges).summary(1000) == summary


@pytest.mark.parametrize(
    ("byte_range", "size"), [(ByteRange(0, 0), 0), (ByteRange(5, 5), 10), (ByteRange(0, 11), 10)]
)
def test_content_range_needs_a_non_empty_range_inside_the_size(
    byte_range: ByteRange, size: int
) -> None:
    with pytest.raises(ValueError):
        byte_range.content_range(size)


@pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 4)])
def test_byte_range_rejects_inverted_or_negative_bounds(start: int, stop: int) -> None:
    with pytest.raises(ValueError):
        ByteRange(start, stop)


def test_byte_range_length() -> None:
    assert ByteRange(10, 25).length == 15
    assert ByteRange(0, 0).length == 0


# ---------------------------------------------------------------------------
# Multipart plans
# ---------------------------------------------------------------------------


def render(plan: MultipartPlan, data: bytes) -> bytes:
    """What a handler following the plan would put on the wire."""
    body = b"".join(
        header + data[byte_range.start : byte_range.stop] for header, byte_range in plan.parts
    )
    return body + plan.epilogue


def test_multipart_plan_matches_rfc_example_shape() -> None:
    plan = plan_multipart(
        [ByteRange(500, 1000), ByteRange(7000, 8000)],
        8000,
        "application/pdf",
        "THIS_STRING_SEPARATES",
    )
    assert plan.content_type == "multipart/byteranges; boundary=THIS_STRING_SEPARATES"
    assert [header for header, _ in plan.parts] == [
        b"\r\n--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Range: bytes 500-999/8000\r\n"
        b"\r\n",
        b"\r\n--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Range: bytes 7000-7999/8000\r\n"
        b"\r\n",
    ]
    assert plan.epilogue == b"\r\n--THIS_STRING_SEPARATES--\r\n"
    assert plan.content_length == len(render(plan, bytes(8000)))


def test_multipart_without_a_content_type_omits_the_line() -> None:
    plan = plan_multipart([ByteRange(0, 1), ByteRange(5, 6)], 10, "", "b")
    assert plan.parts[0][0] == b"\r\n--b\r\nContent-Range: bytes 0-0/10\r\n\r\n"


@pytest.mark.parametrize(
    ("ranges", "size", "content_type", "boundary"),
    [
        ([], 10, "text/plain", "abc"),
        ([ByteRange(0, 11)], 10, "text/plain", "abc"),
        ([ByteRange(3, 3)], 10, "text/plain", "abc"),
        ([ByteRange(0, 1)], 10, "text/plain\r\nSet-Cookie: x=1", "abc"),
        ([ByteRange(0, 1)], 10, "text/plain", ""),
        ([ByteRange(0, 1)], 10, "text/plain", "a" * 71),
        ([ByteRange(0, 1)], 10, "text/plain", "has space"),
        ([ByteRange(0, 1)], 10, "text/plain", "semi;colon"),
        ([ByteRange(0, 1)], 10, "text/plain", "crlf\r\n"),
        ([ByteRange(0, 1)], 10, "text/plain", "ünïcode"),
        ([ByteRange(0, 1)], 10, "text/plain", "it's"),
    ],
)
def test_plan_multipart_rejects_what_no_caller_should_pass(
    ranges: list[ByteRange], size: int, content_type: str, boundary: str
) -> None:
    with pytest.raises(ValueError):
        plan_multipart(ranges, size, content_type, boundary)


def parse_multipart(plan: MultipartPlan, body: bytes) -> list[tuple[str, str, bytes]]:
    """An independent reading of the body: the stdlib MIME parser."""
    # compat32 hands back header values as sent, rather than re-serialized.
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + plan.content_type.encode("ascii") + b"\r\n\r\n" + body
    )
    assert message.is_multipart()
    assert not message.defects
    parsed = []
    for part in message.get_payload():
        assert isinstance(part, email.message.Message)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parsed.append((str(part.get("Content-Type", "")), str(part["Content-Range"]), payload))
    return parsed


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

sizes = st.integers(min_value=0, max_value=2**63)


@given(header=st.text(), size=sizes)
@example(header="bytes=" + "9" * 5000 + "-", size=0)
@example(header="bytes=-" + "9" * 5000, size=2**63)
def test_any_header_gives_one_of_three_results(header: str, size: int) -> None:
    result = parse_range(header, size)
    assert isinstance(result, FullContent | PartialContent | NotSatisfiable)
    if isinstance(result, PartialContent):
        check_partial(result, size)


@given(header=st.text(alphabet="bytesBYTES=-,0123456789 \t+_٣", max_size=60), size=sizes)
def test_any_near_miss_header_gives_one_of_three_results(header: str, size: int) -> None:
    result = parse_range(header, size)
    assert isinstance(result, FullContent | PartialContent | NotSatisfiable)
    if isinstance(result, PartialContent):
        check_partial(result, size)


def check_partial(result: PartialContent, size: int) -> None:
    assert result.ranges
    for byte_range in result.ranges:
        assert 0 <= byte_range.start < byte_range.stop <= size
    for earlier, later in zip(result.ranges, result.ranges[1:]):
        # Sorted, disjoint, and not close enough to have been merged.
        assert later.start - earlier.stop >= COALESCE_GAP_BYTES


# A generator of valid headers, so the properties below reach PartialContent
# as often as the grammar allows rather than by luck.
positions = st.integers(min_value=0, max_value=2**64)
int_ranges = st.tuples(positions, st.none() | positions).map(lambda pair: (pair[0], pair[1]))
suffix_ranges = positions.map(lambda length: (None, length))
specs = st.lists(
    (int_ranges.filter(lambda pair: pair[1] is None or pair[1] >= pair[0])) | suffix_ranges,
    min_size=1,
    max_size=MAX_RANGES,
)
separators = st.sampled_from([",", ", ", " ,", "\t,\t", ",,", " , , "])
units = st.sampled_from(["bytes", "BYTES", "Bytes", "bYtEs"])


def format_spec(spec: tuple[int | None, int | None]) -> str:
    first, last = spec
    if first is None:
        return f"-{last}"
    return f"{first}-" if last is None else f"{first}-{last}"


def requested_bytes(spec: tuple[int | None, int | None], size: int) -> range:
    """The bytes one spec asks for, computed the long way round as an oracle."""
    first, last = spec
    if first is None:
        assert last is not None
        return range(max(0, size - last), size) if last else range(0)
    end = size - 1 if last is None or last >= size else last
    return range(first, end + 1)


@given(
    unit=units,
    chosen=specs,
    separator=separators,
    size=st.integers(min_value=0, max_value=5000) | sizes,
)
def test_valid_headers_against_an_oracle(
    unit: str, chosen: list[tuple[int | None, int | None]], separator: str, size: int
) -> None:
    header = f"{unit}={separator.join(format_spec(spec) for spec in chosen)}"
    result = parse_range(header, size)
    wanted = [requested_bytes(spec, size) for spec in chosen]
    wanted = [span for span in wanted if span.stop > span.start]  # len() overflows past 2**63
    if size == 0:
        suffix_nonzero = any(first is None and last for first, last in chosen)
        assert result == (
            FullContent("empty representation") if suffix_nonzero else NotSatisfiable(0)
        )
        return
    if not wanted:
        assert result == NotSatisfiable(size)
        return
    assert isinstance(result, PartialContent)
    check_partial(result, size)
    # Every requested byte is served...
    for span in wanted:
        assert any(r.start <= span.start and span.stop <= r.stop for r in result.ranges)
    # ...and every served range starts and ends on a requested boundary, so
    # coalescing only ever fills gaps, never extends past what was asked.
    starts = {span.start for span in wanted}
    stops = {span.stop for span in wanted}
    for byte_range in result.ranges:
        assert byte_range.start in starts
        assert byte_range.stop in stops


@given(size=st.integers(min_value=1, max_value=2**63), data=st.data())
def test_format_then_parse_round_trips(size: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=size - 1))
    stop = data.draw(st.integers(min_value=start + 1, max_value=size))
    byte_range = ByteRange(start, stop)
    assert parse_range(f"bytes={start}-{stop - 1}", size) == PartialContent((byte_range,))
    # And the Content-Range we would send names the same bytes.
    match = re.fullmatch(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)", byte_range.content_range(size))
    assert match is not None
    assert (int(match[1]), int(match[2]) + 1, int(match[3])) == (start, stop, size)


@given(
    size=st.integers(min_value=1, max_value=4096),
    data=st.data(),
    content_type=st.sampled_from(["", "video/mp4", "text/plain; charset=utf-8"]),
    boundary=st.text(alphabet="abcXYZ0189+_-.", min_size=1, max_size=70),
)
def test_multipart_content_length_is_the_bytes_produced(
    size: int, data: st.DataObject, content_type: str, boundary: str
) -> None:
    header = data.draw(
        st.lists(
            st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)),
            min_size=1,
            max_size=MAX_RANGES,
        ).map(lambda pairs: "bytes=" + ",".join(f"{min(pair)}-{max(pair)}" for pair in pairs))
    )
    result = parse_range(header, size)
    assert isinstance(result, PartialContent)
    content = bytes(index % 251 for index in range(size))
    plan = plan_multipart(result.ranges, size, content_type, boundary)
    body = render(plan, content)
    assert plan.content_length == len(body)
    # The stdlib MIME parser cannot tell a boundary-like run of content from
    # a delimiter; a real boundary is 32 random hex digits, these are short.
    assume(all(f"--{boundary}".encode() not in content[r.start : r.stop] for r in result.ranges))
    assert parse_multipart(plan, body) == [
        (content_type, byte_range.content_range(size), content[byte_range.start : byte_range.stop])
        for byte_range in result.ranges
    ]
