"""Typed query-string parameters: the only way a client's input reaches an export's SQL.

A route declares its parameters and their types (``since = "date"``); a request's query string
is read against that declaration, strictly, into Python values that the database driver then
binds. Nothing here ever builds SQL text. The rules:

* Every declared parameter is required unless its type ends in ``?`` (then it is ``None`` when
  absent, so a query can say ``:customer IS NULL OR customer = :customer``).
* A parameter the route does not declare, one given twice, or one whose value does not parse
  is refused, with a message naming the parameter: a typo must not silently widen an export.
* Parsing is stricter than Python's: ``int()`` accepts ``+5``, ``1_000`` and non-ASCII digits,
  ``date.fromisoformat`` accepts ``20240101`` and ``2024-W01-1``; none of those are accepted
  here. The accepted forms are the table in ``TYPE_FORMS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qsl

from mediaproxy.http.grammar import parse_digits

__all__ = [
    "TYPE_FORMS",
    "InvalidParameter",
    "ParamSpec",
    "Value",
    "parse_declaration",
    "parse_query",
]

Value = str | int | float | bool | date | datetime | None

# type -> the form a client must send, as shown in error messages.
TYPE_FORMS = {
    "text": "text",
    "integer": "an integer such as 42 or -7",
    "number": "a decimal number such as 3.25 or -1e3",
    "date": "a date YYYY-MM-DD",
    "datetime": "a date-time YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM]",
    "boolean": "true, false, 1 or 0",
}

# SQLite and PostgreSQL both bind 64-bit signed integers.
_INT64 = range(-(2**63), 2**63)
# Longer values are refused rather than handed to the database; 4096 bytes is well past any
# real filter value and still small next to Tornado's 64 KiB request-line limit.
MAX_TEXT_CHARS = 4096

MAX_FIELDS = 100

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?\Z")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\Z")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?"
    r"(Z|[-+ ][0-9]{2}:[0-9]{2})?\Z"
)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class InvalidParameter(ValueError):
    """A query-string parameter that cannot be bound; the message is safe to show the client."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"parameter {name[:100]!r}: {reason}")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # a key of TYPE_FORMS
    optional: bool = False


def parse_declaration(name: str, declared: str) -> ParamSpec:
    """``("since", "date")`` or ``("customer", "text?")`` into a ParamSpec; ValueError if bad."""
    if not _NAME.match(name):
        raise ValueError(
            f"parameter name {name!r} must be letters, digits and _ "
            "(it is the SQL placeholder's name)"
        )
    optional = declared.endswith("?")
    kind = declared[:-1] if optional else declared
    if kind not in TYPE_FORMS:
        raise ValueError(
            f"parameter {name!r} has type {declared!r}; types are "
            f"{', '.join(TYPE_FORMS)} (a trailing ? makes it optional)"
        )
    return ParamSpec(name, kind, optional)


def parse_query(query: str, specs: Mapping[str, ParamSpec]) -> dict[str, Value]:
    """The raw query string read against the declared parameters; raises InvalidParameter."""
    try:
        pairs = parse_qsl(
            query,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError as error:
        raise InvalidParameter("(query string)", "is not UTF-8") from error
    except ValueError as error:  # more than MAX_FIELDS
        raise InvalidParameter("(query string)", f"has more than {MAX_FIELDS} fields") from error
    given: dict[str, str] = {}
    for name, raw in pairs:
        if name not in specs:
            raise InvalidParameter(
                name,
                "unknown parameter; this export takes "
                + (", ".join(sorted(specs)) or "no parameters"),
            )
        if name in given:
            raise InvalidParameter(name, "given more than once")
        given[name] = raw
    values: dict[str, Value] = {}
    for name, spec in specs.items():
        if name in given:
            values[name] = parse_value(spec, given[name])
        elif spec.optional:
            values[name] = None
        else:
            raise InvalidParameter(name, f"is required: {TYPE_FORMS[spec.type]}")
    return values


def parse_value(spec: ParamSpec, raw: str) -> Value:
    """One value by its declared type; raises InvalidParameter naming the parameter."""
    if len(raw) > MAX_TEXT_CHARS:
        raise InvalidParameter(spec.name, f"is longer than {MAX_TEXT_CHARS} characters")
    if "\x00" in raw:
        raise InvalidParameter(spec.name, "contains a NUL character")
    try:
        return _PARSERS[spec.type](raw)
    except ValueError:
        raise InvalidParameter(
            spec.name, f"must be {TYPE_FORMS[spec.type]}, got {raw[:100]!r}"
        ) from None


# Each parser returns the value or raises ValueError; the caller names the parameter.


def _text(raw: str) -> Value:
    return raw


def _integer(raw: str) -> Value:
    # An optional minus, then 1*DIGIT within what a signed 64-bit integer holds.
    if raw.startswith("-"):
        return -parse_digits(raw[1:], maximum=-_INT64.start)
    return parse_digits(raw, maximum=_INT64.stop - 1)


def _number(raw: str) -> Value:
    value = float(raw) if _NUMBER.match(raw) else math.nan
    if not math.isfinite(value):  # also 1e999, which float() makes infinite
        raise ValueError(raw)
    return value


def _date(raw: str) -> Value:
    match = _DATE.match(raw)
    if not match:
        raise ValueError(raw)
    return date(*map(parse_digits, match.groups()))  # ValueError for 2024-02-30


def _datetime(raw: str) -> Value:
    match = _DATETIME.match(raw)
    if not match:
        raise ValueError(raw)
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    tzinfo: timezone | None = None
    if offset == "Z":
        tzinfo = timezone.utc
    elif offset:
        hours, minutes = parse_digits(offset[1:3]), parse_digits(offset[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(raw)
        # A "+" the client did not percent-encode arrives as a space (form encoding).
        sign = -1 if offset[0] == "-" else 1
        tzinfo = timezone(sign * timedelta(hours=hours, minutes=minutes))
    # ValueError for 2024-01-01T24:00
    return datetime(
        parse_digits(year),
        parse_digits(month),
        parse_digits(day),
        parse_digits(hour),
        parse_digits(minute),
        parse_digits(second or "0"),
        parse_digits((fraction or "0").ljust(6, "0")),
        tzinfo,
    )


def _boolean(raw: str) -> Value:
    try:
        return _BOOLEANS[raw.lower()]
    except KeyError:
        raise ValueError(raw) from None


_PARSERS = {
    "text": _text,
    "integer": _integer,
    "number": _number,
    "date": _date,
    "datetime": _datetime,
    "boolean": _boolean,
}
