"""Access control for one route (API keys, expiring signed URLs, or either), and for the
gateway's own surfaces (the status page and /metrics: admin keys).

The client learns only 401 (no credentials: ask for them) or 403 (credentials refused: expired,
wrong or malformed alike); the reason goes to the log, never a key or a signature.

API keys are compared in constant time over the whole list (``KeyRing``): each presented key
is hashed once and compared with the SHA-256 of every configured key, so neither the position
of a match nor the length of a key shows in the response time (``hmac.compare_digest`` is
constant time only for inputs of equal length, which digests always are).

Admin keys arrive in ``Authorization``, as an HTTP Basic password (RFC 7617: what a browser
prompts for, and so the only way the status page's own requests, EventSource included, carry
a key) or a Bearer token (RFC 6750: what Prometheus' ``authorization`` scrape option sends).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from mediaproxy.config import Access
from mediaproxy.errors import Forbidden, Unauthorized
from mediaproxy.http import signing

REALM = "mediaproxy"


class KeyRing:
    """A set of keys that tells whether a presented key is one of them, in constant time."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = [hashlib.sha256(key.encode("ascii")).digest() for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def holds(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        matched = False
        for known in self._digests:  # no early exit: every key costs the same
            matched |= hmac.compare_digest(digest, known)
        return matched


class AccessPolicy:
    """Admit or refuse a request on a route from its method, normalised path, query and headers.

    The path is ``RequestPath.text``: the one the gateway routed by, whatever the spelling.
    """

    def __init__(self, access: Access) -> None:
        self.access = access
        self._keys = KeyRing(access.api_keys)
        challenges = []
        if access.api_keys:
            challenges.append(f'ApiKey realm="{REALM}", header="{access.api_key_header}"')
        if access.signing_secret is not None:
            challenges.append(f'SignedURL realm="{REALM}"')
        self._challenge = ", ".join(challenges)

    def check(
        self, method: str, path: str, query: str, headers: Mapping[str, str], now_s: float
    ) -> str | None:
        """Return if the request may proceed, with the API key that admitted it (None: a
        public route or a signed URL); raise Unauthorized or Forbidden if not."""
        if not self.access.restricted:
            return None
        key = headers.get(self.access.api_key_header) if self._keys else None
        if key is not None and self._keys.holds(key):
            return key
        signature_error = self._signature_error(method, path, query, now_s)
        if signature_error is None:
            return None
        if key is None and isinstance(signature_error, signing.SignatureMissing):
            raise Unauthorized("no credentials", headers={"WWW-Authenticate": self._challenge})
        key_state = "no API key" if key is None else "API key not accepted"
        raise Forbidden(f"{key_state}; signed URL: {signature_error}")

    def _signature_error(
        self, method: str, path: str, query: str, now_s: float
    ) -> signing.SignatureError | None:
        """Why the URL's signature does not admit the request, or None if it does."""
        if self.access.signing_secret is None:
            return signing.SignatureMissing("the route takes no signed URLs")
        try:
            signing.verify(self.access.signing_secret, method, path, query, now_s)
        except signing.SignatureError as error:
            return error
        return None


ADMIN_REALM = "mediaproxy admin"


class AdminAccess:
    """Who may read the status page and /metrics: anyone when no admin key is configured
    (they then show public routes only), else holders of a key (and they show every route)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = KeyRing(keys)

    @property
    def protected(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Return if the surface may be shown; raise Unauthorized (a browser then prompts)."""
        if not self._keys:
            return
        key = presented_key(authorization)
        if key is None or not self._keys.holds(key):
            # 401 for a wrong key too: 403 would stop a browser from asking again.
            raise Unauthorized(
                "admin key missing or not accepted",
                headers={"WWW-Authenticate": f'Basic realm="{ADMIN_REALM}"'},
            )


def presented_key(authorization: str | None) -> str | None:
    """The key in an ``Authorization`` header: a Basic password or a Bearer token."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, colon, password = decoded.partition(":")
        return password if colon else None
    return None
