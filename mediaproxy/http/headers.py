"""Which header fields cross the gateway, and what it adds on the way (RFC 9110 §7.6).

Strategy: one filter for both directions. RFC 9110 §7.6.1: "Intermediaries MUST parse a
received Connection header field before a message is forwarded and, for each
connection-option in this field, remove any header or trailer field(s) from the message with
the same name as the connection-option, and then remove the Connection header field itself".
The fixed hop-by-hop set (§7.6.1, plus the Keep-Alive and Proxy-Connection of older clients) is
removed as well, whether or not Connection names it.

Framing is never taken from the forwarded fields: a Connection header can name
Content-Length, and obeying that would change how the next hop splits the stream (the
request-smuggling pattern). The gateway decides the framing (``content_length``) itself.

Added: ``X-Forwarded-For`` (appended to, like nginx's ``$proxy_add_x_forwarded_for``) and its
standard twin ``Forwarded`` (RFC 7239, appended to likewise: ``for``, ``host``, ``proto``),
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Real-IP`` (replaced: they describe the
hop the gateway received), and ``Via`` in both directions (§7.6.3: "A proxy MUST send an
appropriate Via header field ... in each message that it forwards"). A client's ``Forwarded``
that does not parse is dropped rather than appended to: an unterminated quoted-string in it
would swallow the gateway's own element.

Fields are (name, value) pairs in order, names in any case, as Tornado's HTTPHeaders.get_all()
yields them; repeated fields stay repeated (Set-Cookie).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mediaproxy.http.statuses import is_bodyless

Fields = Sequence[tuple[str, str]]

VIA_PSEUDONYM = "mediaproxy"

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)

# Request fields the gateway sets itself rather than forwarding. Expect: Tornado has already
# answered "100-continue" to the client and is relaying the body; the origin gets it anyway.
_REPLACED_ON_REQUEST = frozenset(
    {
        "host",
        "content-length",
        "expect",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-for",
        "via",
        "forwarded",
        "x-real-ip",
    }
)

# RFC 9110 §5.6.2 token and §5.6.4 quoted-string; RFC 7239 §4 Forwarded.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED_STRING = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"'
_FORWARDED_PAIR = rf"{_TOKEN}=(?:{_TOKEN}|{_QUOTED_STRING})"
_FORWARDED_ELEMENT = rf"(?:{_FORWARDED_PAIR})?(?:;(?:{_FORWARDED_PAIR})?)*"
_FORWARDED = re.compile(rf"[ \t]*{_FORWARDED_ELEMENT}(?:[ \t]*,[ \t]*{_FORWARDED_ELEMENT})*[ \t]*")
_TOKEN_ONLY = re.compile(_TOKEN)
_QUOTABLE = re.compile(r"[\t !-~\x80-\xff]*")


def _list_members(values: Iterable[str]) -> list[str]:
    """The members of a comma-separated list field, trimmed, empty members dropped (§5.6.1)."""
    return [member.strip() for value in values for member in value.split(",") if member.strip()]


def connection_options(fields: Fields) -> frozenset[str]:
    """The lower-cased options of every Connection field: 'close', 'keep-alive', field names."""
    return frozenset(
        member.lower()
        for member in _list_members(value for name, value in fields if name.lower() == "connection")
    )


def end_to_end(fields: Fields) -> list[tuple[str, str]]:
    """The fields minus hop-by-hop ones and those the Connection field names."""
    dropped = HOP_BY_HOP | connection_options(fields)
    return [(name, value) for name, value in fields if name.lower() not in dropped]


def _values(fields: Fields, name: str) -> list[str]:
    return [value for field_name, value in fields if field_name.lower() == name]


def via_entry(http_version: str) -> str:
    """'HTTP/1.1' -> '1.1 mediaproxy' (§7.6.3: received-protocol, then our pseudonym)."""
    protocol = http_version.removeprefix("HTTP/") if http_version.startswith("HTTP/") else "1.1"
    return f"{protocol} {VIA_PSEUDONYM}"


def _appended(fields: Fields, name: str, member: str) -> str:
    return ", ".join([*_list_members(_values(fields, name)), member])


def _forwarded_value(text: str) -> str | None:
    """A Forwarded parameter value: the token itself, else a quoted-string; None if no
    quoted-string can hold it (control characters)."""
    if _TOKEN_ONLY.fullmatch(text):
        return text
    if not _QUOTABLE.fullmatch(text):
        return None
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarded_element(client_ip: str, scheme: str, host: str) -> str:
    """RFC 7239 §4: 'for=192.0.2.7;host="gw:8080";proto=http'; an IPv6 node in brackets, quoted
    (§6); a host no quoted-string can hold is left out."""
    node = f"[{client_ip}]" if ":" in client_ip else client_ip or "unknown"
    pairs = [("for", node), ("host", host), ("proto", scheme)]
    values = [(name, _forwarded_value(value)) for name, value in pairs]
    return ";".join(f"{name}={value}" for name, value in values if value is not None)


def _forwarded(fields: Fields, element: str) -> str:
    """The client's Forwarded elements, if every one of its fields parses, then ours."""
    values = _values(fields, "forwarded")
    if not all(_FORWARDED.fullmatch(value) for value in values):
        values = []
    return ", ".join([*(value.strip() for value in values if value.strip()), element])


def forward_request_headers(
    fields: Fields,
    *,
    client_ip: str,
    client_scheme: str,
    client_host: str,
    client_version: str,
    upstream_host: str,
    content_length: int | None,
) -> list[tuple[str, str]]:
    """The client's request fields as the origin should receive them.

    ``content_length`` is the body length the gateway will send, or None for no length
    (a chunked upload, or no body at all).
    """
    kept = end_to_end(fields)
    added = [("Host", upstream_host)]
    if content_length is not None:
        added.append(("Content-Length", str(content_length)))
    added += [
        ("X-Forwarded-For", _appended(kept, "x-forwarded-for", client_ip)),
        ("X-Forwarded-Proto", client_scheme),
        ("X-Forwarded-Host", client_host),
        ("Forwarded", _forwarded(kept, forwarded_element(client_ip, client_scheme, client_host))),
        ("X-Real-IP", client_ip),
        ("Via", _appended(kept, "via", via_entry(client_version))),
    ]
    return added + [
        (name, value) for name, value in kept if name.lower() not in _REPLACED_ON_REQUEST
    ]


def forward_response_headers(fields: Fields, *, upstream_version: str) -> list[tuple[str, str]]:
    """The origin's response fields as the client should receive them (Via appended)."""
    kept = end_to_end(fields)
    via = _appended(kept, "via", via_entry(upstream_version))
    return [(name, value) for name, value in kept if name.lower() != "via"] + [("Via", via)]


def keeps_alive(http_version: str, fields: Fields) -> bool:
    """Whether the sender lets the connection carry another message (RFC 9112 §9.3)."""
    options = connection_options(fields)
    if "close" in options:
        return False
    return http_version == "HTTP/1.1" or "keep-alive" in options


def is_delimited(request_method: str, status: int, fields: Fields) -> bool:
    """True unless the response body ends only when the connection closes (RFC 9112 §6.3).

    Such a body cannot be told apart from a truncated one, and leaves no connection to reuse.
    """
    if request_method == "HEAD" or is_bodyless(status):
        return True
    names = {name.lower() for name, _ in fields}
    return "content-length" in names or "transfer-encoding" in names


# RFC 9110 §9.2.2: requests that may be sent again without asking the client, since a second
# copy changes nothing more than the first; "a proxy MUST NOT automatically retry
# non-idempotent requests".
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def may_retry(method: str) -> bool:
    """Whether a request whose connection failed unanswered may be sent again unasked."""
    return method in IDEMPOTENT_METHODS
