"""The store's errors, as statuses for the people asking and as advice for the operator.

S3 answers an error with a status and an XML body naming a code (``<Code>NoSuchKey</Code>``).
A client of the gateway needs little of it: whether the object exists (404), whether it
changed (304, 412), whether to come back later (503 with Retry-After). The operator needs the
rest, in the log: a signature, a key id, a clock or a region that is wrong is the gateway's
configuration, so the client gets a 502 and the log line says what to fix.

AccessDenied answers 404 unless the route sets ``hide_forbidden = false``: S3 itself answers
403 for a missing key to a caller without ``s3:ListBucket``, and 404 for a present one, which
would tell anyone which keys exist.

A HEAD error has no body, so no code: its status alone decides where it can (404, 412, 5xx);
the integration asks again with a GET to learn the code of the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mediaproxy.errors import (
    Forbidden,
    MediaproxyError,
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    ServiceUnavailable,
    UpstreamError,
)
from mediaproxy.http.grammar import is_digits, parse_digits_or_none

# An error document is a few hundred bytes; more than this is not one.
MAX_ERROR_BYTES = 64 * 1024
# S3 asks clients to back off after SlowDown and 503s without saying for how long.
DEFAULT_RETRY_AFTER_S = "1"

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion"})
_FORBIDDEN = frozenset(
    {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidObjectState"}
)
_ELEMENT = re.compile(rb"<(Code|Message|Region|Endpoint|ActualObjectSize)>([^<]{0,1024})</\1>")


@dataclass(frozen=True)
class StoreError:
    """What the store said: its status, and the elements of its error document."""

    status: int
    code: str = ""  # "" for a HEAD, whose error has no body
    message: str = ""
    region: str = ""  # where the bucket really is (AuthorizationHeaderMalformed, redirects)
    endpoint: str = ""
    object_size: int | None = None  # InvalidRange says it
    retry_after: str | None = None  # the store's Retry-After, when it is delay-seconds

    @classmethod
    def parse(cls, status: int, body: bytes, retry_after: str | None = None) -> StoreError:
        """The error document's fields; a body that is not one leaves them empty."""
        # A regular expression, not an XML parser: a few flat elements are all that is read,
        # and nothing in the document can make it expand or fetch anything.
        found = {
            name.decode(): value.decode("utf-8", "replace").strip()
            for name, value in _ELEMENT.findall(body[:MAX_ERROR_BYTES])
        }
        size = found.get("ActualObjectSize", "")
        return cls(
            status,
            found.get("Code", ""),
            found.get("Message", ""),
            found.get("Region", ""),
            found.get("Endpoint", ""),
            parse_digits_or_none(size),
            retry_after if retry_after and is_digits(retry_after) else None,
        )

    def __str__(self) -> str:
        said = f"{self.code}: {self.message}" if self.code else "no error document"
        return f"the store answered {self.status} ({said})"


def needs_code(status: int) -> bool:
    """Whether a body-less error's status is too ambiguous to map without its code."""
    return status not in (304, 404, 412, 416) and status < 500


def client_error(error: StoreError, *, hide_forbidden: bool) -> MediaproxyError:
    """The status the client gets for a store error; the detail is for the log only."""
    detail = str(error)
    retry_after = error.retry_after
    if error.code in _NOT_FOUND or (error.status == 404 and not error.code):
        return NotFound(detail)
    if error.code in _FORBIDDEN:
        return NotFound(detail) if hide_forbidden else Forbidden(detail)
    if error.status == 412 or error.code == "PreconditionFailed":
        return PreconditionFailed(detail)
    if error.status == 416 or error.code == "InvalidRange":
        return RangeNotSatisfiable("bytes */*")  # replaced with the size by the caller
    if error.status == 503 or error.code == "SlowDown":
        return ServiceUnavailable(
            detail, headers={"Retry-After": retry_after or DEFAULT_RETRY_AFTER_S}
        )
    if error.status >= 500:
        return UpstreamError(detail, headers={"Retry-After": retry_after or DEFAULT_RETRY_AFTER_S})
    return UpstreamError(detail)


def advice(error: StoreError, *, region: str, credentials: str) -> str | None:
    """What the operator should fix, when the store's answer says the route is misconfigured.

    ``credentials`` says where the route's keys come from ("$S3_KEY and $S3_SECRET", "the
    AWS credential chain"), so the advice can name it.
    """
    code = error.code
    if code == "SignatureDoesNotMatch":
        return (
            f"the store refused the request signature: the secret access key from "
            f"{credentials} does not belong to its access key id (or a proxy between "
            f"them rewrites requests)"
        )
    if code in ("InvalidAccessKeyId", "InvalidClientTokenId"):
        return f"the store does not know the access key id from {credentials}"
    if code in ("ExpiredToken", "TokenRefreshRequired"):
        return f"the session token from {credentials} has expired: renew it"
    if code == "InvalidToken":
        return f"the session token from {credentials} is malformed or not valid"
    if code == "RequestTimeTooSkewed":
        return (
            "this host's clock is too far from the store's (15 minutes at most for "
            "SigV4): synchronise it (NTP)"
        )
    if (
        code == "AuthorizationHeaderMalformed"
        or code == "PermanentRedirect"
        or (error.status in (301, 307) and not code)
    ):
        where = f" ({error.region})" if error.region else ""
        at = f" at {error.endpoint}" if error.endpoint else ""
        return (
            f"the bucket is not in region {region}{where}{at}: set the route's region "
            f"(and endpoint) to the bucket's"
        )
    return None
