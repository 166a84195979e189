"""Access control for one route: API keys, expiring signed URLs, or either.

The client learns only 401 (no credentials: ask for them) or 403 (credentials refused: expired,
wrong or malformed alike); the reason goes to the log, never a key or a signature.

API keys are compared in constant time over the whole list: each presented key is hashed
once and compared with the SHA-256 of every configured key, so neither the position of a
match nor the length of a key shows in the response time (``hmac.compare_digest`` is constant
time only for inputs of equal length, which digests always are).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from mediaproxy.config import Access
from mediaproxy.errors import Forbidden, Unauthorized
from mediaproxy.http import signing

REALM = "mediaproxy"


class AccessPolicy:
    """Admit or refuse a request on a route from its method, normalised path, query and headers.

    The path is ``RequestPath.text``: the one the gateway routed by, whatever the spelling.
    """

    def __init__(self, access: Access) -> None:
        self.access = access
        self._key_digests = [hashlib.sha256(key.encode("ascii")).digest()
                             for key in access.api_keys]
        challenges = []
        if access.api_keys:
            challenges.append(f'ApiKey realm="{REALM}", header="{access.api_key_header}"')
        if access.signing_secret is not None:
            challenges.append(f'SignedURL realm="{REALM}"')
        self._challenge = ", ".join(challenges)

    def check(self, method: str, path: str, query: str, headers: Mapping[str, str],
              now_s: float) -> None:
        """Return if the request may proceed; raise Unauthorized or Forbidden if not."""
        if not self.access.restricted:
            return
        key = headers.get(self.access.api_key_header) if self._key_digests else None
        if key is not None and self._key_matches(key):
            return
        signature_error = self._signature_error(method, path, query, now_s)
        if signature_error is None:
            return
        if key is None and isinstance(signature_error, signing.SignatureMissing):
            raise Unauthorized("no credentials", headers={"WWW-Authenticate": self._challenge})
        key_state = "no API key" if key is None else "API key not accepted"
        raise Forbidden(f"{key_state}; signed URL: {signature_error}")

    def _signature_error(self, method: str, path: str, query: str,
                         now_s: float) -> signing.SignatureError | None:
        """Why the URL's signature does not admit the request, or None if it does."""
        if self.access.signing_secret is None:
            return signing.SignatureMissing("the route takes no signed URLs")
        try:
            signing.verify(self.access.signing_secret, method, path, query, now_s)
        except signing.SignatureError as error:
            return error
        return None

    def _key_matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        matched = False
        for known in self._key_digests:  # no early exit: every key costs the same
            matched |= hmac.compare_digest(digest, known)
        return matched
