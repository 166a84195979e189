"""AWS Signature Version 4 for the header-signed requests an S3 store takes.

The algorithm (AWS's "Create a signed AWS API request"): a canonical request (method, the
path as sent, the sorted query, the sorted and trimmed header fields, the payload's hash),
its SHA-256 in a string to sign together with the time and the scope
(``date/region/service/aws4_request``), and an HMAC-SHA256 of that string under a key derived
from the secret by four HMACs over the scope's parts.

This is the S3 flavour, which differs from the generic one in two ways: the path is signed
exactly as it is sent (already percent-encoded once, never normalised nor encoded again), and
the query is signed as given, already encoded (``S3Settings.object_target``, ``list_query``).

Why not botocore's ``S3SigV4Auth``: it builds an ``AWSRequest``, re-parses the URL and copies
the headers for each request, and derives the signing key anew each time, which made signing
the larger part of what the route adds to a request's first byte. The derived key depends
only on the secret, the day, the region and the service, so it is kept until one of them
changes; everything per request is two SHA-256 and one HMAC. It is tested against AWS's
published test vectors (tests/unit/sigv4_vectors) and against botocore's signer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_PAYLOAD_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    """What signs: never in ``repr`` or a log line."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def amz_date(epoch_s: float) -> str:
    """X-Amz-Date's ISO 8601 basic form, UTC: ``20150830T123600Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch_s))


def canonical_query(query: str) -> str:
    """The already encoded query's ``name=value`` pairs, sorted by name, then value."""
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_fields(fields: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """The canonical header block and the signed header names, for every field given.

    Names are lower-cased and sorted; each value is trimmed, its inner runs of spaces made
    one, and the values of a repeated name joined by commas in the order they came.
    """
    values: dict[str, list[str]] = {}
    for name, value in fields:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    names = sorted(values)
    block = "".join(f"{name}:{','.join(values[name])}\n" for name in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    path: str,
    query: str,
    fields: Iterable[tuple[str, str]],
    payload_sha256: str,
) -> tuple[str, str]:
    """The canonical request, and the signed header names that go in Authorization."""
    block, signed = canonical_fields(fields)
    request = f"{method}\n{path}\n{canonical_query(query)}\n{block}\n{signed}\n{payload_sha256}"
    return request, signed


def string_to_sign(date_time: str, scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode()).hexdigest()
    return f"{ALGORITHM}\n{date_time}\n{scope}\n{digest}"


class SigV4:
    """Signs for one region and service, keeping the last derived signing key."""

    def __init__(self, region: str, service: str) -> None:
        self.region = region
        self.service = service
        # (secret, day, key): the key changes with the day, or when credentials rotate.
        self._derived: tuple[str, str, bytes] | None = None

    def signing_key(self, secret_access_key: str, day: str) -> bytes:
        derived = self._derived
        if derived is not None and derived[0] == secret_access_key and derived[1] == day:
            return derived[2]
        key = ("AWS4" + secret_access_key).encode()
        for part in (day, self.region, self.service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        self._derived = (secret_access_key, day, key)
        return key

    def authorization(
        self,
        credentials: Credentials,
        method: str,
        path: str,
        query: str,
        fields: Iterable[tuple[str, str]],
        payload_sha256: str,
        date_time: str,
    ) -> str:
        """The Authorization value for a request whose ``fields`` (all signed) include
        Host and X-Amz-Date = ``date_time``, and the security token if there is one."""
        day = date_time[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        request, signed = canonical_request(method, path, query, fields, payload_sha256)
        signature = hmac.digest(
            self.signing_key(credentials.secret_access_key, day),
            string_to_sign(date_time, scope, request).encode(),
            "sha256",
        ).hex()
        return (
            f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
