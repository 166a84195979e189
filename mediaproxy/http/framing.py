"""Where a message's body ends (RFC 9112 §6): one strict reading of its framing fields.

Strategy: every Content-Length the gateway reads, from a client or an origin, goes through
``parse_content_length``, built on the one ``1*DIGIT`` rule (``grammar.parse_digits``). A
message whose framing is not exactly one number (repeats of that number allowed), or exactly
"chunked", has no trustworthy end: RFC 9112 §6.3 makes that "an unrecoverable error" (a 400
for a request; for a response a proxy "MUST close the connection to the server, discard the
received response, and send a 502 (Bad Gateway) response to the client").

The gateway must also agree with Tornado, which reads both directions' bodies: where Tornado
would refuse a message's framing (``HTTP1Connection._read_body``,
``is_transfer_encoding_chunked``), these refuse it too, and never accept less. Tornado is
that strict against request smuggling; it checks only as it starts reading the body, after
the gateway has seen the headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mediaproxy.http.grammar import MAX_INT64, GrammarError, parse_digits

# Tornado's own list separator for repeated Content-Length values: OWS after a comma only, so
# "5 ,5" is refused by both.
_LIST_SEPARATOR = re.compile(r",[ \t]*")


class InvalidFraming(GrammarError):
    """A message whose body cannot be delimited (a 400 for a request, a 502 for a response)."""


def parse_content_length(values: Iterable[str]) -> int:
    """The length that Content-Length field values (one per field line) declare.

    RFC 9110 §8.6: ``Content-Length = 1*DIGIT``; a recipient of "a list of identical decimal
    values (e.g., "Content-Length: 42, 42")" may "replace the duplicated field-values with a
    single valid Content-Length field containing that decimal value". Repeats of one numeral,
    as list members or as field lines, are that numeral; anything else raises InvalidFraming.
    """
    members = [member for value in values for member in _LIST_SEPARATOR.split(value)]
    if not members:
        raise InvalidFraming("no Content-Length value")
    first = members[0]
    if any(member != first for member in members):
        raise InvalidFraming(f"unequal Content-Length values: {', '.join(members)[:80]!r}")
    try:
        return parse_digits(first, maximum=MAX_INT64)
    except GrammarError as error:
        raise InvalidFraming(f"Content-Length: {error}") from None


def _is_chunked(transfer_encoding: str, content_length: str | None) -> bool:
    """A Transfer-Encoding must be exactly "chunked" and stand alone (Tornado's rule)."""
    if content_length is not None:
        raise InvalidFraming("both Transfer-Encoding and Content-Length")
    if transfer_encoding.lower() != "chunked":
        raise InvalidFraming(f"Transfer-Encoding {transfer_encoding[:40]!r} is not chunked")
    return True


def request_body_framing(
    transfer_encoding: str | None, content_length: str | None
) -> tuple[bool, int | None] | None:
    """How Tornado frames a request body: (has one, its length; None if chunked or absent).

    None when Tornado will answer 400 instead. Values are Tornado's: repeated field lines
    joined by commas.
    """
    try:
        if transfer_encoding is not None:
            return _is_chunked(transfer_encoding, content_length), None
        if content_length is None:
            return False, None
        length = parse_content_length([content_length])
    except InvalidFraming:
        return None
    return length > 0, length


def response_body_length(
    status: int, *, head_request: bool, transfer_encoding: str | None, content_length: str | None
) -> int | None:
    """The length a final response declares; None if chunked or ended by the connection
    closing. InvalidFraming when the body cannot be delimited.

    A Content-Length is checked even where no body follows (HEAD, 304): it is forwarded, and
    a client would read it as the truth.
    """
    length = None if content_length is None else parse_content_length([content_length])
    if head_request or status == 304:
        return length
    if transfer_encoding is not None and _is_chunked(transfer_encoding, content_length):
        length = None
    if status == 204 and (transfer_encoding is not None or length not in (None, 0)):
        raise InvalidFraming("a 204 response with a body")
    return length
