"""What a shared cache may store and for how long (RFC 9111), as pure functions over fields.

Strategy: a response is stored only when every rule below allows it, and then only in the one
shape the gateway's cache knows (byte slices of a representation named by a strong entity-tag,
or by its Last-Modified when it was read whole in one response); anything else is a ``bypass``
with the reason for the log. The request's side and the response's side are separate functions
because the request is seen before any origin is asked. Freshness follows §4.2.1 in order:
``s-maxage``, ``max-age``, ``Expires`` minus ``Date``, else the route's default (heuristic
freshness, §4.2.2, chosen by the operator).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mediaproxy.http.conditional import parse_http_date
from mediaproxy.http.grammar import GrammarError, parse_digits

Fields = Iterable[tuple[str, str]]


def _values(fields: Fields, name: str) -> list[str]:
    wanted = name.lower()
    return [value for key, value in fields if key.lower() == wanted]


def cache_directives(fields: Fields) -> dict[str, str | None]:
    """Cache-Control's directives by lower-cased name; a value unquoted, None when absent.

    §5.2: "Cache directives are identified by a token, to be compared case-insensitively,
    and have an optional argument". A directive repeated keeps its first value.
    """
    directives: dict[str, str | None] = {}
    for value in _values(fields, "Cache-Control"):
        for member in _split_members(value):
            name, equals, argument = member.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            argument = argument.strip()
            if len(argument) >= 2 and argument[0] == argument[-1] == '"':
                argument = argument[1:-1]
            directives.setdefault(name, argument if equals else None)
    return directives


def _split_members(value: str) -> list[str]:
    """A comma-separated list, commas inside quoted strings kept (``no-cache="a, b"``)."""
    members: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            members.append("".join(current))
            current = []
        else:
            current.append(char)
    members.append("".join(current))
    return [member.strip() for member in members if member.strip()]


def _seconds(directives: dict[str, str | None], name: str) -> int | None:
    """A delta-seconds argument (§1.2.2: 1*DIGIT); None when absent or malformed.

    §1.2.2: "If a cache receives a delta-seconds value greater than the greatest integer it
    can represent [...] it MUST consider the value to be 2147483648".
    """
    argument = directives.get(name)
    if argument is None:
        return None
    try:
        return parse_digits(argument, maximum=2**31)
    except GrammarError:
        return None if not argument.isascii() or not argument.isdigit() else 2**31


def strong_etag(fields: Fields) -> str | None:
    """The response's ETag if it is one strong entity-tag (``"x"``, not ``W/"x"``), else None.

    Only a strong validator says two ranges belong to the same representation byte for byte
    (RFC 9110 §8.8.1), which is what combining slices from several responses relies on.
    """
    values = _values(fields, "ETag")
    if len(values) != 1:
        return None
    etag = values[0].strip()
    if len(etag) < 2 or etag[0] != '"' or etag[-1] != '"' or '"' in etag[1:-1]:
        return None
    if not all("\x21" <= char <= "\x7e" or "\x80" <= char <= "\xff" for char in etag[1:-1]):
        return None
    return etag


@dataclass(frozen=True)
class Bypass:
    """Not stored, not served from the cache: why, for the log."""

    reason: str


def request_bypass(method: str, fields: Fields, *, authorization_allowed: bool) -> Bypass | None:
    """Whether the request must go straight to the origin (None: the cache may answer it).

    Only GET responses are stored; a HEAD may be answered from a stored GET's head (RFC 9110
    §9.3.2: "The HEAD method is identical to GET except that the server MUST NOT send content
    in the response"). §3.5: a shared cache does not store a response to a request with
    Authorization unless the response says it may; here the gateway's own credentials count
    (a route with API keys or signed URLs and ``cache_private = true``:
    ``authorization_allowed``).
    """
    if method not in ("GET", "HEAD"):
        return Bypass(f"method {method}")
    fields = list(fields)
    if _values(fields, "Authorization") and not authorization_allowed:
        return Bypass("Authorization on the request")
    if "no-store" in cache_directives(fields):
        return Bypass("request no-store")
    return None


def response_bypass(fields: Fields, *, whole: bool) -> Bypass | None:
    """Whether a 200/206 response may be stored in slices (None: it may); ``whole``: the
    response carries the whole object (a 200), not a part of it.

    §3: no ``no-store``, not ``private`` (a shared cache), a strong validator, and no Vary
    but ``Accept-Encoding`` (the cache asks the origin for the identity encoding only, so that
    one variant is all it ever holds). The validator is a strong ETag, or Last-Modified for a
    whole object: parts of several responses may be joined only when a strong validator says
    they are of one representation (§3.4), and a Last-Modified date is weak in general (RFC
    9110 §8.8.2.2: the resource may change twice within its second), but a whole object read
    in one response is one representation, which If-Modified-Since can revalidate.
    """
    fields = list(fields)
    directives = cache_directives(fields)
    if "no-store" in directives:
        return Bypass("no-store")
    if "private" in directives:
        return Bypass("private")
    for value in _values(fields, "Vary"):
        for member in value.split(","):
            name = member.strip().lower()
            if name and name != "accept-encoding":
                return Bypass(f"Vary: {member.strip()}")
    if strong_etag(fields) is None:
        modified = _values(fields, "Last-Modified")
        if not modified or parse_http_date(modified[0]) is None:
            return Bypass("no strong ETag")
        if not whole:
            return Bypass("part of an object with no ETag (Last-Modified validates whole ones)")
    return None


def freshness_lifetime_s(fields: Fields, *, default_s: float) -> float:
    """How long a stored response stays fresh (§4.2.1); 0 means revalidate on every use.

    ``no-cache`` without field names means "store, but never serve without revalidating"
    (§5.2.2.4); ``must-revalidate`` changes nothing while the response is fresh.
    """
    fields = list(fields)
    directives = cache_directives(fields)
    if "no-cache" in directives and directives["no-cache"] is None:
        return 0.0
    for name in ("s-maxage", "max-age"):
        seconds = _seconds(directives, name)
        if seconds is not None:
            return float(seconds)
        if name in directives:
            return 0.0  # §4.2.1: an invalid max-age makes the response stale
    expires = _values(fields, "Expires")
    if expires:
        expires_s = parse_http_date(expires[0])
        dates = _values(fields, "Date")
        date_s = parse_http_date(dates[0]) if dates else None
        if expires_s is None or date_s is None:
            return 0.0  # §5.3: an invalid Expires means "already expired"
        return float(max(0, expires_s - date_s))
    return default_s
