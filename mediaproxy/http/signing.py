"""Expiring signed URLs: a link an application hands a browser, valid until a moment it chose.

A signed URL carries two query parameters, appended last::

    /media/talk.mp4?download&expires=1767225600&signature=Hn3f...  (43 characters)

``signature`` is HMAC-SHA256 under the route's secret over four lines, base64url without
padding::

    METHOD \\n PATH \\n EXPIRES \\n QUERY

- METHOD: the method signed for. A URL signed for GET also admits HEAD (browsers and players
  probe with HEAD before they play); nothing else is implied.
- PATH: the request path, route prefix included, in the one normalised form the gateway
  routes by (``mediaproxy.http.paths``: RFC 3986 normal form, dot segments removed). Spellings
  RFC 3986 calls equivalent (``%7E`` and ``~``) share a signature; ones it does not
  (``%2F`` and ``/``) do not, and a route refuses the ambiguous ones before anything is
  checked.
- EXPIRES: Unix time in seconds (ASCII digits); the URL is refused from that second on.
- QUERY: every other query parameter, in the order sent, joined with ``&`` as sent. The whole
  query is signed, not only the path: a proxied route forwards the query to its origin, and the
  holder of a link must not be able to change what the origin is asked for. Add parameters
  before signing, never after.

Range, If-Range and the other headers are not signed: a media player seeks with Range on the
same URL. ``verify`` either returns or raises ``SignatureError``, whatever the input: it reads
hostile query strings, and its fuzz test holds it to that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from mediaproxy.http.grammar import GrammarError, parse_digits

EXPIRES_PARAM = "expires"
SIGNATURE_PARAM = "signature"

_SIGNATURE_CHARS = 43  # base64url of a 32-byte digest, unpadded
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{%d}" % _SIGNATURE_CHARS)
# Ten digits reach the year 2286; twelve leave room.
_MAX_EXPIRES_S = 10**12 - 1


class SignatureError(Exception):
    """The URL carries no valid signature; ``str()`` says why (for the log, never the client)."""


class SignatureMissing(SignatureError):
    """Neither signing parameter is present: the client sent no credentials at all."""


def _canonical(method: str, path: str, expires_s: int, query: str) -> bytes:
    # Tornado hands over latin-1 decoded text; surrogatepass: no string can fail to encode.
    return "\n".join((method, path, str(expires_s), query)).encode("utf-8", "surrogatepass")


def compute_signature(
    secret: bytes, method: str, path: str, expires_s: int, query: str = ""
) -> str:
    """The ``signature`` value for this method, normalised path, expiry and other parameters."""
    digest = hmac.new(secret, _canonical(method, path, expires_s, query), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_query(secret: bytes, method: str, path: str, expires_s: int, query: str = "") -> str:
    """The full query string of a signed URL: ``query`` with expiry and signature appended."""
    signature = compute_signature(secret, method, path, expires_s, query)
    ours = f"{EXPIRES_PARAM}={expires_s}&{SIGNATURE_PARAM}={signature}"
    return f"{query}&{ours}" if query else ours


def split_query(query: str) -> tuple[str, str | None, str | None]:
    """``(other parameters, raw expires, raw signature)``; an absent parameter is None.

    A parameter given twice is refused: which copy counts would be a guess.
    """
    others: list[str] = []
    found: dict[str, str] = {}
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        if name in (EXPIRES_PARAM, SIGNATURE_PARAM):
            if name in found:
                raise SignatureError(f"{name} given twice")
            found[name] = value
        else:
            others.append(item)
    return "&".join(others), found.get(EXPIRES_PARAM), found.get(SIGNATURE_PARAM)


def verify(secret: bytes, method: str, path: str, query: str, now_s: float) -> None:
    """Return if ``query`` signs this request and has not expired; else raise SignatureError."""
    others, raw_expires, raw_signature = split_query(query)
    if raw_expires is None and raw_signature is None:
        raise SignatureMissing("no signature")
    if raw_expires is None or raw_signature is None:
        raise SignatureError("expires and signature must come together")
    try:
        expires_s = parse_digits(raw_expires, maximum=_MAX_EXPIRES_S)
    except GrammarError:
        raise SignatureError("expires is not a Unix time in seconds") from None
    if not _SIGNATURE.fullmatch(raw_signature):
        raise SignatureError("signature is not 43 base64url characters")
    presented = raw_signature.encode("ascii")
    # Check the signature before the expiry, so an unsigned URL learns nothing of the clock.
    methods = ("GET", "HEAD") if method == "HEAD" else (method,)
    matches = [
        hmac.compare_digest(
            presented,
            compute_signature(secret, signed_for, path, expires_s, others).encode("ascii"),
        )
        for signed_for in methods
    ]
    if not any(matches):
        raise SignatureError("signature does not match")
    if now_s >= expires_s:
        raise SignatureError(f"expired {now_s - expires_s:.0f} s ago")
