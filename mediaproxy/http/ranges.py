"""Range requests (RFC 9110 §14) and multipart/byteranges bodies (§14.6).

Strategy: the Range header is read once, against the representation's size,
into one of three results -- serve it in full, serve these byte ranges, or
answer 416 -- and nothing downstream looks at the header again.

* The inclusive ``first-last`` of the wire becomes a half-open
  ``ByteRange(start, stop)`` here, at parse time, and turns back into an
  inclusive last byte only where a ``Content-Range`` is formatted.
* Parsing is strict (ASCII digits only, whitespace only around the commas of
  the list and after "=") and failure is quiet: any header that is not a
  valid ``bytes`` ranges-specifier is ignored and the representation is served
  whole, which the RFC always permits. The function never raises for a string.
* Numbers are never trusted to be small. The range count is checked before
  any number is converted, positions saturate at the size, and the specs are
  sorted and coalesced, so no header can make a response larger than the
  representation plus its multipart framing (the CVE-2011-3192 pattern).
* A multipart body is planned, not produced: `plan_multipart` returns the
  exact part headers and the total length, so the handler can send
  ``Content-Length`` before reading a byte of the file.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from mediaproxy.http.grammar import (
    GrammarError,
    is_digits,
    is_token,
    parse_digits,
    parse_digits_capped,
)

__all__ = [
    "COALESCE_GAP_BYTES",
    "MAX_RANGES",
    "ByteRange",
    "FullContent",
    "MultipartPlan",
    "NotSatisfiable",
    "PartialContent",
    "RangeResult",
    "parse_range",
    "plan_multipart",
]


# Apache answers a Range with more than 200 specs in full (MaxRanges, added
# after CVE-2011-3192 "Apache Killer", where hundreds of overlapping ranges
# made one request fan out into gigabytes); nginx's max_ranges is unlimited
# unless an operator sets it. Real clients sit far below either: media players
# and download managers ask for one range, PDF viewers byte-serving a
# linearized document ask for a few. 16 leaves headroom for those while
# refusing a hostile header after a split(), before a single number in it has
# been converted, sorted or merged.
MAX_RANGES = 16

# RFC 9110 §15.3.7.2: "When multiple ranges are requested, a server MAY
# coalesce any of the ranges that overlap, or that are separated by a gap that
# is smaller than the overhead of sending multiple parts, regardless of the
# order in which the corresponding range-spec appeared in the received Range
# header field. Since the typical overhead between parts of a
# multipart/byteranges payload is around 80 bytes, [...]"
COALESCE_GAP_BYTES = 80

# RFC 9110 §5.6.1: OWS = *( SP / HTAB ).
_OWS = " \t"


@dataclass(frozen=True)
class ByteRange:
    """A half-open byte interval [start, stop) of a representation."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        # Empty intervals are allowed (a caller may describe "all of a 0-byte
        # file" as ByteRange(0, 0)); they just have no Content-Range.
        if not 0 <= self.start <= self.stop:
            raise ValueError(f"invalid byte range [{self.start}, {self.stop})")

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value for this range of a ``size``-byte representation.

        RFC 9110 §14.4: incl-range = first-pos "-" last-pos -- the last byte
        is inclusive, so this is the one place ``stop - 1`` appears.
        """
        if self.length == 0 or self.stop > size:
            raise ValueError(
                f"[{self.start}, {self.stop}) is not a non-empty range of {size} bytes"
            )
        return f"bytes {self.start}-{self.stop - 1}/{size}"


@dataclass(frozen=True)
class FullContent:
    """Ignore the Range header and serve the whole representation with 200."""

    reason: str  # for logs: "no range", "unknown unit", "malformed", ...


@dataclass(frozen=True)
class PartialContent:
    """Serve 206 with these ranges: non-empty, within the size, sorted, coalesced.

    RFC 9110 §15.3.7.2: "A server MUST NOT generate a multipart response to a
    request for a single range [...]. However, a server MAY generate a
    multipart/byteranges response with only a single body part if multiple
    ranges were requested and only one range was found to be satisfiable or
    only one range remained after coalescing." So one range here means a plain
    206 with Content-Range, whatever the request looked like.
    """

    ranges: tuple[ByteRange, ...]

    def summary(self, size: int) -> str:
        """Every range served, in Content-Range's form (``bytes 0-0,500-599/1000``): one
        range's is its Content-Range; several, the parts' together, for the log."""
        spans = ",".join(f"{r.start}-{r.stop - 1}" for r in self.ranges)
        return f"bytes {spans}/{size}"


@dataclass(frozen=True)
class NotSatisfiable:
    """Answer 416 Range Not Satisfiable."""

    size: int

    def content_range(self) -> str:
        # RFC 9110 §15.5.17: "A server that generates a 416 response to a
        # byte-range request SHOULD generate a Content-Range header field
        # specifying the current length of the selected representation".
        return f"bytes */{self.size}"


RangeResult = FullContent | PartialContent | NotSatisfiable

_NO_RANGE = FullContent("no range")
_MALFORMED = FullContent("malformed")
_UNKNOWN_UNIT = FullContent("unknown unit")
_TOO_MANY = FullContent("too many ranges")
_EMPTY_REPRESENTATION = FullContent("empty representation")


def parse_range(header: str | None, size: int, *, max_ranges: int = MAX_RANGES) -> RangeResult:
    """Decide how to answer a ``Range`` header for a representation of ``size`` bytes.

    Never raises for any str input and any size >= 0.
    """
    if size < 0:
        raise ValueError(f"negative representation size {size}")
    if header is None:
        return _NO_RANGE
    # RFC 9110 §5.5: leading and trailing whitespace is not part of a field
    # value; the server may or may not have stripped it already.
    value = header.strip(_OWS)

    # RFC 9110 §14.1.1: ranges-specifier = range-unit "=" range-set
    unit, equals, range_set = value.partition("=")
    if not equals or not is_token(unit):  # a range-unit is a token
        # Includes "bytes =0-1": a token cannot contain whitespace, and the
        # grammar has no OWS around "=".
        return _MALFORMED
    # RFC 9110 §14.1: "Range unit names are case-insensitive". The unit is
    # ASCII here, so lower() cannot map a foreign letter onto "bytes".
    if unit.lower() != "bytes":
        # RFC 9110 §14.2: "An origin server MUST ignore a Range header field
        # that contains a range unit it does not understand."
        return _UNKNOWN_UNIT

    specs = _split_list(range_set)
    if specs is None:
        return _MALFORMED
    # Counted before any parsing or coalescing, so the cost of refusing a
    # header of 10,000 tiny ranges is one split. RFC 9110 §14.2: "A server
    # that supports range requests MAY ignore or reject a Range header field
    # that contains an invalid ranges-specifier (Section 14.1.1), a
    # ranges-specifier with more than two overlapping ranges, or a set of many
    # small ranges that are not listed in ascending order, since these are
    # indications of either a broken client or a deliberate denial-of-service
    # attack (Section 17.15)."
    if len(specs) > max_ranges:
        return _TOO_MANY

    satisfiable: list[ByteRange] = []
    empty_but_satisfiable = False
    try:
        for spec in specs:
            resolved = _resolve_spec(spec, size)
            if resolved is None:
                continue
            if resolved.length:
                satisfiable.append(resolved)
            else:
                empty_but_satisfiable = True
    except _InvalidSpec:
        # RFC 9110 §14.1.1: "A ranges-specifier is invalid if it contains any
        # range-spec that is invalid or undefined for the indicated
        # range-unit." One bad spec spoils the whole header.
        return _MALFORMED

    if not satisfiable:
        if empty_but_satisfiable:
            # RFC 9110 §14.1.2: "When a selected representation has zero
            # length, the only satisfiable form of range-spec in a GET request
            # is a suffix-range with a non-zero suffix-length." Satisfiable, so
            # 416 would be wrong; but no Content-Range can describe zero bytes.
            # §14.2: "A server that supports range requests MAY ignore a Range
            # header field when the selected representation has no content".
            return _EMPTY_REPRESENTATION
        # RFC 9110 §15.5.17: 416 means "the set of ranges in the request's
        # Range header field [...] has been rejected either because none of
        # the requested ranges are satisfiable or because the client has
        # requested an excessive number of small or overlapping ranges".
        return NotSatisfiable(size)
    return PartialContent(_coalesce(satisfiable))


def _split_list(range_set: str) -> list[str] | None:
    """The non-empty elements of ``1#range-spec``, or None if the list is malformed.

    RFC 9110 §5.6.1.2: "a recipient MUST accept lists that satisfy the
    following syntax: #element => [ element ] *( OWS "," OWS [ element ] )".
    So empty elements are skipped and whitespace may border a comma. The list
    rule puts none between "=" and the first spec, but §14.1.2's own example
    does ("bytes= 0-999, 4500-5499, -1000"), so that is accepted too.
    """
    specs = [spec for spec in (element.strip(_OWS) for element in range_set.split(",")) if spec]
    # RFC 9110 §14.1.1: range-set = 1#range-spec -- at least one.
    return specs or None


class _InvalidSpec(Exception):
    """A range-spec that the grammar does not produce; never escapes this module."""


def _resolve_spec(spec: str, size: int) -> ByteRange | None:
    """One range-spec against the size: its range, or None if unsatisfiable.

    The range is empty only for a suffix of a 0-byte representation. Raises
    _InvalidSpec when the spec is not a valid byte range-spec.
    """
    # RFC 9110 §14.1.2:
    #   int-range     = first-pos "-" [ last-pos ]
    #   suffix-range  = "-" suffix-length
    # Byte ranges have no other-range form, so anything else is invalid.
    first_text, dash, last_text = spec.partition("-")
    if not dash:
        raise _InvalidSpec(spec)

    if not first_text:
        suffix_digits = _digits(last_text)
        # §14.1.2: "a valid bytes range-spec is satisfiable if it is either
        # [...] a suffix-range with a non-zero suffix-length", and "If the
        # selected representation is shorter than the specified
        # suffix-length, the entire representation is used."
        # Zero is tested on the digits: saturating at a size of 0 would make
        # every suffix look like "-0".
        if suffix_digits == "0":
            return None
        return ByteRange(size - _saturate(suffix_digits, size), size)

    first_digits = _digits(first_text)
    stop = size
    if last_text:
        last_digits = _digits(last_text)
        # "An int-range is invalid if the last-pos value is present and less
        # than the first-pos." Compared as digit strings (no leading zeros, so
        # longer means larger) because either may be too long to convert.
        if (len(last_digits), last_digits) < (len(first_digits), first_digits):
            raise _InvalidSpec(spec)
        # §14.1.2: "If the last-pos value is absent, or if the value is
        # greater than or equal to the current length of the representation
        # data, the byte range is interpreted as the remainder of the
        # representation".
        stop = min(_saturate(last_digits, size) + 1, size)
    first = _saturate(first_digits, size)
    # §14.1.2: satisfiable if "an int-range with a first-pos that is less
    # than the current length of the selected representation".
    if first >= size:
        return None
    return ByteRange(first, stop)


def _digits(text: str) -> str:
    """``1*DIGIT`` (``grammar.is_digits``) without leading zeros; raises _InvalidSpec for
    anything else."""
    if not is_digits(text):
        raise _InvalidSpec(text)
    return text.lstrip("0") or "0"


def _saturate(digits: str, size: int) -> int:
    """The numeral's value, capped at ``size``.

    RFC 9110 §14.1.2: "recipients MUST anticipate potentially large decimal
    numerals and prevent parsing errors due to integer conversion overflows."
    Any position or suffix length at or beyond the size means the same thing
    as the size itself, so capping loses nothing.
    """
    return parse_digits_capped(digits, size)


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    # Sorted by start. §15.3.7.2 says a server "SHOULD send the parts in the
    # same order that the corresponding range-spec appeared", but coalescing
    # is permitted "regardless of the order", each part names its own bytes in
    # its Content-Range, and ascending order lets a file be read front to back.
    ordered = sorted(ranges, key=lambda r: (r.start, r.stop))
    merged = [ordered[0]]
    for current in ordered[1:]:
        previous = merged[-1]
        if current.start - previous.stop < COALESCE_GAP_BYTES:
            merged[-1] = ByteRange(previous.start, max(previous.stop, current.stop))
        else:
            merged.append(current)
    return tuple(merged)


# RFC 2046 §5.1.1: bcharsnospace, intersected with tchar so the boundary can
# appear in Content-Type unquoted, less "'", which RFC 2231 parameter parsers
# (Python's email package among them) read as a charset'language' separator.
# secrets.token_hex() and token_urlsafe() produce only these.
_BOUNDARY_CHARS = frozenset(string.ascii_letters + string.digits + "+_-.")


@dataclass(frozen=True)
class MultipartPlan:
    """The framing of a multipart/byteranges body, computed before any content is read.

    The body is, in order: for each part its header bytes then the bytes of
    its range, then the epilogue.
    """

    content_type: str
    parts: tuple[tuple[bytes, ByteRange], ...]
    epilogue: bytes

    @property
    def content_length(self) -> int:
        return sum(len(header) + byte_range.length for header, byte_range in self.parts) + len(
            self.epilogue
        )


def plan_multipart(
    ranges: Sequence[ByteRange], size: int, content_type: str, boundary: str
) -> MultipartPlan:
    """Plan a multipart/byteranges body (RFC 9110 §14.6) for ``ranges`` of a
    ``size``-byte representation.

    ``content_type`` is the representation's own media type ("" for none);
    ``boundary`` must be random (``secrets.token_hex(16)``) because it cannot
    be checked against content this function never sees.
    Raises ValueError for arguments no caller should pass.
    """
    # RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace
    if not 1 <= len(boundary) <= 70 or not all(c in _BOUNDARY_CHARS for c in boundary):
        raise ValueError(f"unusable multipart boundary {boundary!r}")
    # A CR or LF here would let the caller's media type inject part headers.
    if not all(" " <= c <= "~" or c == "\t" for c in content_type):
        raise ValueError(f"content type {content_type!r} is not printable ASCII")
    if not ranges:
        raise ValueError("a multipart body needs at least one part")

    # RFC 9110 §14.6: "Within the header area of each body part in the
    # multipart content, the server MUST generate a Content-Range header
    # field corresponding to the range being enclosed in that body part. If
    # the selected representation would have had a Content-Type header field
    # in a 200 (OK) response, the server SHOULD generate that same
    # Content-Type header field in the header area of each body part."
    #
    # RFC 2046 §5.1.1: delimiter := CRLF dash-boundary. Every part starts with
    # CRLF "--" boundary, including the first, where the CRLF closes an empty
    # preamble ("[preamble CRLF] dash-boundary"); nginx and Apache frame the
    # same way, and it keeps every part header the same shape.
    type_line = f"Content-Type: {content_type}\r\n" if content_type else ""
    parts = tuple(
        (
            (
                f"\r\n--{boundary}\r\n{type_line}"
                f"Content-Range: {byte_range.content_range(size)}\r\n\r\n"
            ).encode("ascii"),
            byte_range,
        )
        for byte_range in ranges
    )
    # close-delimiter := delimiter "--", then CRLF before an empty epilogue.
    epilogue = f"\r\n--{boundary}--\r\n".encode("ascii")
    return MultipartPlan(
        content_type=f"multipart/byteranges; boundary={boundary}",
        parts=parts,
        epilogue=epilogue,
    )


def parse_content_range(value: str) -> tuple[ByteRange, int] | None:
    """The range and complete length a 206's ``Content-Range`` states, or None if it states
    no satisfied range (RFC 9110 §14.4: ``bytes first-last/complete-length``; an unknown
    length ``*`` names nothing a cache can place).
    """
    unit, space, rest = value.strip(_OWS).partition(" ")
    span, slash, length = rest.partition("/")
    first, dash, last = span.partition("-")
    if unit.lower() != "bytes" or not space or not slash or not dash:
        return None
    try:
        start, end, size = parse_digits(first), parse_digits(last), parse_digits(length)
    except GrammarError:
        return None
    if end < start or end >= size:
        return None
    return ByteRange(start, end + 1), size
