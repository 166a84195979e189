"""Validators and conditional requests (RFC 9110 §8.8, §13).

Strategy: the handler describes the current representation once, as
`Validators` (an entity tag and a whole-second modification time), and asks
two questions of the request:

* `evaluate` walks the precondition headers in the exact order of RFC 9110
  §13.2.2 and answers proceed, 304 or 412. Each header is consulted only when
  the precedence rules say it counts, so an If-Modified-Since that an
  If-None-Match outranks is never even parsed.
* `if_range_allows_partial` answers whether a Range request may be served
  partially (§13.1.5).

Request headers are hostile input and none of this raises on them. An entity
tag list that does not parse is treated as a list that matches nothing, which
fails closed where it matters: If-Match becomes 412, If-None-Match becomes a
full 200 and If-Range a full 200 -- never a 304 or a partial body the client
cannot verify. A date that does not parse is ignored, as §13.1.3 and §13.1.4
require.

Entity tags are made from file metadata (inode, size, mtime in nanoseconds),
never from content: hashing a multi-gigabyte video to answer a HEAD is the cost
Tornado's StaticFileHandler pays with its SHA-512 ETag, and this gateway
doesn't.
"""

from __future__ import annotations

import calendar
import datetime
import enum
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from mediaproxy.http.grammar import parse_digits

__all__ = [
    "Outcome",
    "Validators",
    "evaluate",
    "format_http_date",
    "if_range_allows_partial",
    "make_etag",
    "parse_http_date",
]

# RFC 9110 §5.6.1: OWS = *( SP / HTAB ).
_OWS = " \t"
# RFC 9110 §9.1: "The method token is case-sensitive".
_SAFE_METHODS_FOR_304 = frozenset({"GET", "HEAD"})


def make_etag(inode: int, size: int, mtime_ns: int) -> str:
    """A strong entity tag for a file, from its metadata alone, e.g. ``"1a2b-3c-4d5e"``.

    Apache's default FileETag is the same triple, nginx uses mtime and size.
    The inode catches a file replaced by rename with its mtime preserved
    (``rsync -t``, ``cp -p``); nanoseconds catch a rewrite within the same
    second, which a one-second Last-Modified cannot. Hex keeps it short.
    """
    if inode < 0 or size < 0:
        raise ValueError(f"negative inode {inode} or size {size}")
    # mtime_ns may be negative (a file dated before 1970); "-" is an etagc.
    return f'"{inode:x}-{size:x}-{mtime_ns:x}"'


# ---------------------------------------------------------------------------
# HTTP-date (RFC 9110 §5.6.7)
# ---------------------------------------------------------------------------

# Fixed English names: strftime's %a and %b follow the process locale.
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def format_http_date(epoch_s: float) -> str:
    """The IMF-fixdate for a moment, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.

    Fractions of a second are floored, so a file's Last-Modified names the
    second its mtime falls in. Raises ValueError outside years 1-9999, which
    the four-digit year cannot express.
    """
    if not math.isfinite(epoch_s):
        raise ValueError(f"not a moment in time: {epoch_s}")
    try:
        moment = _EPOCH + datetime.timedelta(seconds=math.floor(epoch_s))
    except OverflowError as error:
        raise ValueError(f"{epoch_s} is outside what an HTTP-date can express") from error
    # RFC 9110 §5.6.7: "a sender MUST generate [timestamps] in the IMF-fixdate format".
    return (
        f"{_DAY_NAMES[moment.weekday()]}, {moment.day:02d} {_MONTH_NAMES[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT"
    )


_DAY = "(?:" + "|".join(_DAY_NAMES) + ")"
_LONG_DAY = "(?:" + "|".join(_LONG_DAY_NAMES) + ")"
_MONTH = "(" + "|".join(_MONTH_NAMES) + ")"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 §5.6.7. "[0-9]" rather than "\d", which matches any Unicode digit.
#   IMF-fixdate  = day-name "," SP date1 SP time-of-day SP GMT
#   date1        = day SP month SP year          ; e.g., 02 Jun 1982
_IMF_FIXDATE = re.compile(_DAY + ", ([0-9]{2}) " + _MONTH + " ([0-9]{4}) " + _TIME + " GMT")
#   rfc850-date  = day-name-l "," SP date2 SP time-of-day SP GMT
#   date2        = day "-" month "-" 2DIGIT      ; e.g., 02-Jun-82
_RFC850_DATE = re.compile(_LONG_DAY + ", ([0-9]{2})-" + _MONTH + "-([0-9]{2}) " + _TIME + " GMT")
#   asctime-date = day-name SP date3 SP time-of-day SP year
#   date3        = month SP ( 2DIGIT / ( SP DIGIT ))  ; e.g., Jun  2
_ASCTIME_DATE = re.compile(_DAY + " " + _MONTH + " ([0-9]{2}| [0-9]) " + _TIME + " ([0-9]{4})")


def parse_http_date(value: str, *, now_s: float | None = None) -> int | None:
    """Epoch seconds for an HTTP-date, or None if it is not one.

    RFC 9110 §5.6.7: "A recipient that parses a timestamp value in an HTTP
    field MUST accept all three HTTP-date formats." The grammar is followed
    exactly ("HTTP-date is case sensitive"); the day name must be a day name
    but is not checked against the date, which carries no information the
    date does not.

    ``now_s`` only matters for the obsolete two-digit-year format; it defaults
    to the system clock, and tests pin it.
    """
    text = value.strip(_OWS)
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850_DATE.fullmatch(text):
        day, month, short_year, hour, minute, second = match.groups()
        year = str(_rfc850_year(parse_digits(short_year), time.time() if now_s is None else now_s))
    elif match := _ASCTIME_DATE.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
        day = day.lstrip()
    else:
        return None
    return _epoch(
        parse_digits(year),
        _MONTH_NUMBERS[month],
        parse_digits(day),
        parse_digits(hour),
        parse_digits(minute),
        parse_digits(second),
    )


def _rfc850_year(short_year: int, now_s: float) -> int:
    # RFC 9110 §5.6.7: "Recipients of a timestamp value in rfc850-date format,
    # which uses a two-digit year, MUST interpret a timestamp that appears to
    # be more than 50 years in the future as representing the most recent
    # year in the past that had the same last two digits." Judged by year,
    # which is off by at most a few months at the 50-year edge.
    current_year = time.gmtime(now_s).tm_year
    year = current_year - current_year % 100 + short_year
    return year - 100 if year - current_year > 50 else year


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
    # A field that names a day that does not exist names no moment at all.
    if not 1 <= year <= 9999 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    # time-of-day: "00:00:00 - 23:59:60 (leap second)". A leap second lands on
    # the next minute's first second, as POSIX time has no name for it.
    if hour > 23 or minute > 59 or second > 60:
        return None
    return calendar.timegm((year, month, day, hour, minute, second))


# ---------------------------------------------------------------------------
# Entity tags (RFC 9110 §8.8.3)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _EntityTag:
    weak: bool
    opaque: str  # between the quotes


def _is_etagc(char: str) -> bool:
    # etagc = %x21 / %x23-7E / obs-text ; obs-text = %x80-FF, which is how a
    # latin-1-decoded header carries any non-ASCII byte.
    return char == "!" or "#" <= char <= "~" or "\x80" <= char <= "\xff"


def _read_entity_tag(text: str, position: int) -> tuple[_EntityTag, int] | None:
    """The entity-tag starting at ``position`` and the position after it, or None."""
    # entity-tag = [ weak ] opaque-tag ; weak = %s"W/" (case-sensitive)
    weak = text.startswith("W/", position)
    if weak:
        position += 2
    # opaque-tag = DQUOTE *etagc DQUOTE
    if not text.startswith('"', position):
        return None
    close = text.find('"', position + 1)
    if close < 0:
        return None
    opaque = text[position + 1 : close]
    if not all(_is_etagc(char) for char in opaque):
        return None
    return _EntityTag(weak, opaque), close + 1


def _parse_entity_tag(text: str) -> _EntityTag | None:
    """Exactly one entity-tag, surrounding OWS allowed, or None."""
    text = text.strip(_OWS)
    read = _read_entity_tag(text, 0)
    if read is None or read[1] != len(text):
        return None
    return read[0]


def _parse_entity_tag_list(text: str) -> list[_EntityTag] | None:
    """``#entity-tag``, or None if the list is malformed.

    A scanner rather than split(","): "," is an etagc, so a comma inside the
    quotes belongs to the tag. Linear in the length of the header.
    """
    tags: list[_EntityTag] = []
    position = 0
    end = len(text)
    while True:
        # RFC 9110 §5.6.1.2: #element => [ element ] *( OWS "," OWS [ element ] )
        while position < end and text[position] in " \t,":
            position += 1
        if position == end:
            return tags
        read = _read_entity_tag(text, position)
        if read is None:
            return None
        tag, position = read
        tags.append(tag)
        while position < end and text[position] in _OWS:
            position += 1
        if position < end and text[position] != ",":
            return None


def _strong_match(a: _EntityTag, b: _EntityTag) -> bool:
    # RFC 9110 §8.8.3.2: "Strong comparison: two entity tags are equivalent if
    # both are not weak and their opaque-tags match character-by-character."
    return not a.weak and not b.weak and a.opaque == b.opaque


def _weak_match(a: _EntityTag, b: _EntityTag) -> bool:
    # "Weak comparison: two entity tags are equivalent if their opaque-tags
    # match character-by-character, regardless of either or both being tagged
    # as "weak"."
    return a.opaque == b.opaque


# ---------------------------------------------------------------------------
# Preconditions (RFC 9110 §13)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Validators:
    """What the server knows about the current representation."""

    etag: str | None  # quoted strong or W/ weak etag, as sent in ETag
    last_modified_s: int | None  # whole epoch seconds, as sent in Last-Modified

    def __post_init__(self) -> None:
        # Request headers may be anything; our own ETag may not. An unquoted
        # tag would otherwise silently match nothing, forever.
        if self.etag is not None and _parse_entity_tag(self.etag) is None:
            raise ValueError(f"{self.etag!r} is not an entity-tag")


class Outcome(enum.Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = "not modified"  # 304
    PRECONDITION_FAILED = "precondition failed"  # 412


def _current_tag(validators: Validators) -> _EntityTag | None:
    return None if validators.etag is None else _parse_entity_tag(validators.etag)


def _field(headers: Mapping[str, str], name: str) -> str | None:
    # Field names are case-insensitive (RFC 9110 §5.1). Tornado's HTTPHeaders
    # already is; a plain dict is searched the long way.
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


_PRECONDITION_NAMES = frozenset(
    {"if-match", "if-unmodified-since", "if-none-match", "if-modified-since"}
)


def evaluate(method: str, headers: Mapping[str, str], validators: Validators) -> Outcome:
    """The outcome of the request's preconditions, in RFC 9110 §13.2.2 order.

    Call it only for a representation that exists and would otherwise be
    served with 2xx: §13.2.1, "A server MUST ignore all received
    preconditions if its response to the same request without those
    conditions, prior to any content transfer coding, would have been a
    status code other than a 2xx (Successful) or 412 (Precondition Failed)."
    """
    # Most requests carry no precondition at all: one pass over the names answers them.
    if _PRECONDITION_NAMES.isdisjoint(name.lower() for name in headers):
        return Outcome.PROCEED
    current = _current_tag(validators)

    # "1. When recipient is the origin server and If-Match is present,
    #  evaluate the If-Match precondition: if true, continue to step 3; if
    #  false, respond 412 (Precondition Failed) [...]"
    if_match = _field(headers, "If-Match")
    if if_match is not None:
        if not _if_match(if_match, current):
            return Outcome.PRECONDITION_FAILED
    # "2. When recipient is the origin server, If-Match is not present, and
    #  If-Unmodified-Since is present, evaluate the If-Unmodified-Since
    #  precondition: if true, continue to step 3; if false, respond 412"
    else:
        if_unmodified_since = _field(headers, "If-Unmodified-Since")
        if if_unmodified_since is not None and not _if_unmodified_since(
            if_unmodified_since, validators
        ):
            return Outcome.PRECONDITION_FAILED

    # "3. When If-None-Match is present, evaluate the If-None-Match
    #  precondition: if true, continue to step 5; if false for GET/HEAD,
    #  respond 304 (Not Modified); if false for other methods, respond 412"
    if_none_match = _field(headers, "If-None-Match")
    if if_none_match is not None:
        if not _if_none_match(if_none_match, current):
            return (
                Outcome.NOT_MODIFIED
                if method in _SAFE_METHODS_FOR_304
                else Outcome.PRECONDITION_FAILED
            )
    # "4. When the method is GET or HEAD, If-None-Match is not present, and
    #  If-Modified-Since is present, evaluate the If-Modified-Since
    #  precondition: if true, continue to step 5; if false, respond 304"
    elif method in _SAFE_METHODS_FOR_304:
        if_modified_since = _field(headers, "If-Modified-Since")
        if if_modified_since is not None and not _if_modified_since(if_modified_since, validators):
            return Outcome.NOT_MODIFIED

    # Step 5, If-Range, belongs to the Range decision: if_range_allows_partial.
    return Outcome.PROCEED


def _if_match(value: str, current: _EntityTag | None) -> bool:
    # RFC 9110 §13.1.1: "If the field value is "*", the condition is true if
    # the origin server has a current representation for the target
    # resource." evaluate() is only called when it does.
    if value.strip(_OWS) == "*":
        return True
    # "If the field value is a list of entity tags, the condition is true if
    # any of the listed tags match the entity tag of the selected
    # representation." [...] "An origin server MUST use the strong comparison
    # function when comparing entity tags for If-Match".
    tags = _parse_entity_tag_list(value)
    if tags is None or current is None:
        return False
    return any(_strong_match(tag, current) for tag in tags)


def _if_none_match(value: str, current: _EntityTag | None) -> bool:
    # RFC 9110 §13.1.2: "If the field value is "*", the condition is false if
    # the origin server has a current representation for the target
    # resource."
    if value.strip(_OWS) == "*":
        return False
    # "If the field value is a list of entity tags, the condition is false if
    # one of the listed tags matches the entity tag of the selected
    # representation." [...] "A recipient MUST use the weak comparison
    # function when comparing entity tags for If-None-Match".
    tags = _parse_entity_tag_list(value)
    if tags is None or current is None:
        return True
    return not any(_weak_match(tag, current) for tag in tags)


def _if_unmodified_since(value: str, validators: Validators) -> bool:
    # RFC 9110 §13.1.4: "A recipient MUST ignore the If-Unmodified-Since
    # header field if the received field value is not a valid HTTP-date
    # (including when the field value appears to be a list of dates)." and
    # "[...] if the resource does not have a modification date available."
    date = parse_http_date(value)
    if date is None or validators.last_modified_s is None:
        return True
    # "If the selected representation's last modification date is earlier
    # than or equal to the date provided in the field value, the condition is
    # true."
    return validators.last_modified_s <= date


def _if_modified_since(value: str, validators: Validators) -> bool:
    # RFC 9110 §13.1.3: "A recipient MUST ignore the If-Modified-Since header
    # field if the received field value is not a valid HTTP-date, the field
    # value has more than one member, or if the request method is neither GET
    # nor HEAD." and "[...] if the resource does not have a modification date
    # available." A list of dates is not a valid HTTP-date, so one test covers
    # both of the first two.
    date = parse_http_date(value)
    if date is None or validators.last_modified_s is None:
        return True
    # "If the selected representation's last modification date is earlier or
    # equal to the date provided in the field value, the condition is false."
    return validators.last_modified_s > date


def if_range_allows_partial(if_range: str | None, validators: Validators) -> bool:
    """Whether a Range request may be answered with 206 (RFC 9110 §13.1.5).

    Call only when a Range header is present: "A server MUST ignore an
    If-Range header field received in a request that does not contain a
    Range header field." False means: ignore Range, send the full 200.
    """
    if if_range is None:
        return True
    value = if_range.strip(_OWS)
    # "A valid entity-tag can be distinguished from a valid HTTP-date by
    # examining the first three characters for a DQUOTE."
    if '"' in value[:3]:
        # "If the entity-tag validator provided exactly matches the ETag field
        # value for the selected representation using the strong comparison
        # function (Section 8.8.3.2), the condition is true." A weak tag on
        # either side never compares strongly equal.
        tag = _parse_entity_tag(value)
        current = _current_tag(validators)
        return tag is not None and current is not None and _strong_match(tag, current)
    # "If the HTTP-date validator provided exactly matches the Last-Modified
    # field value for the selected representation, the condition is true."
    # Exact equality, not "not modified since": a date after the
    # modification could belong to a copy assembled from two versions.
    date = parse_http_date(value)
    return (
        date is not None
        and validators.last_modified_s is not None
        and date == validators.last_modified_s
    )
