"""A response head from an origin (RFC 9112 §4, §5): bytes in, status and fields out.

Strategy: the head arrives as one block (status line and field lines, up to the empty line that
ends it); it is split once on LF and each line is checked against the grammar's rules
(``grammar.is_token`` for a field name, ``grammar.is_field_value`` for its value), so that a
response either parses whole or raises ``MalformedHead``, never anything else. Which fields
delimit the body is not decided here: ``framing.response_body_length`` reads them.

Where the RFC lets a recipient choose, the choice is Tornado's (whose HTTP1Connection read
these heads before): a line may end in a bare LF (RFC 9112 §2.2: "MAY recognize a single LF"),
an obs-fold continuation line is joined to the previous value with a space (§5.2: a recipient
"MUST ... replace each received obs-fold with one or more SP octets"), and the reason phrase
may be absent along with the space before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mediaproxy.http.grammar import FIELD_VALUE, TOKEN, GrammarError, is_digits, is_field_value

# RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT; a proxy speaks HTTP/1.x only.
VERSIONS = frozenset(("HTTP/1.0", "HTTP/1.1"))
_OWS = " \t"
# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS, in one match per line.
_FIELD_LINE = re.compile(rf"({TOKEN}):[ \t]*({FIELD_VALUE})[ \t]*")


class MalformedHead(GrammarError):
    """A response head that does not follow RFC 9112 (a 502 for the client)."""

    status_hint = 502


@dataclass(frozen=True)
class ParsedHead:
    version: str
    status: int
    reason: str
    fields: list[tuple[str, str]]


def parse_response_head(block: bytes) -> ParsedHead:
    """The status line and fields of ``block``, which ends with the empty line (CRLF CRLF).

    Octets are read as Latin-1, as every field value is one octet per character on the wire.
    """
    lines = block.decode("latin-1").split("\n")
    status_line = lines[0].removesuffix("\r")
    # RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in VERSIONS:
        raise MalformedHead(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    if len(code) != 3 or not is_digits(code):
        raise MalformedHead(f"status code {code[:20]!r} is not 3DIGIT")
    if reason and not is_field_value(reason):
        raise MalformedHead(f"reason phrase {reason[:40]!r} has control characters")
    fields: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.removesuffix("\r")
        if not line:
            continue  # the empty line that ends the head (and what follows the last LF)
        if line[0] in _OWS:
            if not fields:
                raise MalformedHead("a continuation line before any field")
            name, value = fields.pop()
            line = f"{name}:{value} {line.strip(_OWS)}"
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            # RFC 9112 §5.1: "No whitespace is allowed between the field name and colon."
            raise MalformedHead(f"not a field line of tokens and visible octets: {line[:80]!r}")
        fields.append((match[1], match[2]))
    return ParsedHead(version, int(code), reason, fields)
