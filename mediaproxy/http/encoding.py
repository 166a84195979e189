"""Content codings: which one a client accepts, and which responses are worth compressing.

Strategy: the decision is made once, when the response starts, from the status, the header
fields the integration set and the request's Accept-Encoding; nothing later looks again.

* ``negotiate`` reads Accept-Encoding (RFC 9110 §12.5.3) against the codings the server can
  produce, in the server's order of preference. It never raises: a malformed member is
  ignored, and a header with nothing usable means identity, which RFC 9110 always allows.
  No header at all also means identity: "any coding is acceptable" (§12.5.3) is not a reason
  to gzip for curl, which sends none unless asked.
* ``plan_coding`` refuses whatever compression would break or waste: bodies that are not text
  (media, archives, images: already compressed), responses the integration already encoded,
  partial content (a Content-Range counts bytes of the unencoded representation), and
  statuses without a body, and bodies of a known length below ``min_bytes`` (nginx's
  ``gzip_min_length``): they save next to nothing and would lose their Content-Length.
  ``Vary: Accept-Encoding`` goes on every response that *could* have been compressed, so a
  cache never hands a gzip body to a client that did not ask for one.
* ``encoded_fields`` rewrites the header fields: Content-Encoding set, Content-Length dropped
  (the compressed length is not known before the end: the body goes chunked), a strong ETag
  made weak (§8.8.1: a strong validator changes with the content coding).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mediaproxy.http.grammar import parse_digits_or_none
from mediaproxy.http.statuses import is_bodyless

__all__ = [
    "Coding",
    "encoded_fields",
    "is_compressible",
    "negotiate",
    "parse_accept_encoding",
    "plan_coding",
]

Fields = Sequence[tuple[str, str]]

# RFC 9110 §5.6.2 token, and §12.4.2 qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
# RFC 9110 §8.4.1.3: "A recipient SHOULD consider "x-gzip" to be equivalent to "gzip"."
_ALIASES = {"x-gzip": "gzip"}

# Media types that are text underneath, beyond text/*.
_TEXTUAL_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/csv",
        "application/javascript",
        "application/x-javascript",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/graphql",
        "application/sql",
        "image/svg+xml",
    }
)
_TEXTUAL_SUFFIXES = ("+json", "+xml", "+yaml")


def parse_accept_encoding(header: str) -> dict[str, float]:
    """Each coding (lower-case; ``*`` included) with its weight; malformed members skipped.

    When a coding is listed twice, its first member counts.
    """
    weights: dict[str, float] = {}
    for member in header.split(","):
        coding, *params = (part.strip(" \t") for part in member.split(";"))
        if not coding or not _TOKEN.match(coding):
            continue  # an empty list member (RFC 9110 §5.6.1 allows them) or garbage
        weight = 1.0
        valid = True
        for param in params:
            name, _, value = param.partition("=")
            if name.strip(" \t").lower() != "q":
                continue  # Accept-Encoding defines only q; others are not ours to judge
            value = value.strip(" \t")
            if not _QVALUE.match(value):
                valid = False
                break
            weight = float(value)
        coding = _ALIASES.get(coding.lower(), coding.lower())
        if valid and coding not in weights:
            weights[coding] = weight
    return weights


def negotiate(header: str | None, offered: Sequence[str]) -> str | None:
    """The offered coding the client weighs highest (ties: the server's order), or None.

    None means identity: no header, nothing offered that the client accepts with q > 0, or
    the client explicitly prefers identity to every offered coding.
    """
    if header is None:
        return None
    weights = parse_accept_encoding(header)
    best: str | None = None
    best_weight = 0.0
    for coding in offered:
        weight = weights.get(coding, weights.get("*", 0.0))
        if weight > best_weight:
            best, best_weight = coding, weight
    if best is not None and weights.get("identity", 0.0) > best_weight:
        return None
    return best


def is_compressible(content_type: str | None) -> bool:
    """Text-like media types; everything else is assumed compressed already or opaque."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/")
        or media_type in _TEXTUAL_TYPES
        or media_type.endswith(_TEXTUAL_SUFFIXES)
    )


@dataclass(frozen=True)
class Coding:
    """What to do with one response: compress with ``coding`` (None: send as is); whether
    the answer depended on Accept-Encoding (then ``Vary`` must say so)."""

    coding: str | None
    varies: bool


IDENTITY = Coding(None, varies=False)


def _field(fields: Fields, name: str) -> str | None:
    lowered = name.lower()
    return next((value for field, value in fields if field.lower() == lowered), None)


def plan_coding(
    status: int,
    fields: Fields,
    accept_encoding: str | None,
    offered: Sequence[str],
    min_bytes: int = 0,
) -> Coding:
    """Whether and how to compress a response with these status and header fields.

    A body whose Content-Length is below ``min_bytes`` goes as it is; it still varies, since
    a longer body at the same URL would have been compressed."""
    if is_bodyless(status) or status == 206:
        return IDENTITY
    if _field(fields, "Content-Encoding") is not None or _field(fields, "Content-Range"):
        return IDENTITY
    if not is_compressible(_field(fields, "Content-Type")):
        return IDENTITY
    declared = _field(fields, "Content-Length")
    length = parse_digits_or_none(declared) if declared is not None else None
    if length is not None and length < min_bytes:
        return Coding(None, varies=True)
    return Coding(negotiate(accept_encoding, offered), varies=True)


def encoded_fields(fields: Fields, plan: Coding) -> list[tuple[str, str]]:
    """The header fields for a response sent under ``plan``."""
    out = list(fields)
    if plan.varies:
        vary = [value for name, value in out if name.lower() == "vary"]
        listed = {v.strip().lower() for value in vary for v in value.split(",")}
        if not listed & {"accept-encoding", "*"}:
            out.append(("Vary", "Accept-Encoding"))
    if plan.coding is None:
        return out
    rewritten: list[tuple[str, str]] = []
    for name, value in out:
        lowered = name.lower()
        if lowered == "content-length":
            continue
        if lowered == "etag" and not value.startswith("W/"):
            value = "W/" + value
        rewritten.append((name, value))
    rewritten.append(("Content-Encoding", plan.coding))
    return rewritten
