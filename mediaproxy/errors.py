"""Why a request fails or a stream ends: the one table of statuses.

    MediaproxyError                  500  anything the gateway could not do
    ├── RequestError                 400  the client asked for something malformed
    │   ├── Unauthorized             401
    │   ├── Forbidden                403
    │   ├── NotFound                 404
    │   ├── MethodNotAllowed         405  carries the Allow header
    │   ├── PreconditionFailed       412
    │   ├── PayloadTooLarge          413
    │   ├── RangeNotSatisfiable      416  carries Content-Range: bytes */size
    │   └── TooManyRequests          429  a usage plan's rate, quota or stream cap
    ├── ServiceUnavailable           503  carries Retry-After
    └── UpstreamError                502  the integration behind the route failed
        ├── UpstreamTimeout          504  ... or did not answer in time
        └── BufferedResponseTooLarge 502  ... or outgrew buffered_max_bytes in buffered mode

Each error carries the short phrase the client sees; the detail (``str(error)``) goes to the
log only. Before the response headers are sent an error becomes a status; after them the
connection is aborted instead, and the ``Termination`` says why.

Outside that tree, ``ListenError``: the gateway cannot take its address at start-up (exit 2,
like a config error).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class MediaproxyError(Exception):
    status = 500
    phrase = "Internal Server Error"

    def __init__(
        self,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        phrase: str | None = None,
    ) -> None:
        super().__init__(detail or phrase or self.phrase)
        self.headers: Mapping[str, str] = headers or {}
        if phrase:
            # A more precise phrase for this one failure (it reaches the client: keep it short
            # and free of internals), e.g. "Bad Request: parameter 'since' is required".
            self.phrase = phrase


class RequestError(MediaproxyError):
    status = 400
    phrase = "Bad Request"


class Unauthorized(RequestError):
    status = 401
    phrase = "Unauthorized"


class Forbidden(RequestError):
    status = 403
    phrase = "Forbidden"


class NotFound(RequestError):
    status = 404
    phrase = "Not Found"


class MethodNotAllowed(RequestError):
    status = 405
    phrase = "Method Not Allowed"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"{method} not allowed", headers={"Allow": ", ".join(allowed)})


class PreconditionFailed(RequestError):
    status = 412
    phrase = "Precondition Failed"


class PayloadTooLarge(RequestError):
    status = 413
    phrase = "Payload Too Large"


class RangeNotSatisfiable(RequestError):
    status = 416
    phrase = "Range Not Satisfiable"

    def __init__(self, content_range: str) -> None:
        super().__init__(content_range, headers={"Content-Range": content_range})


class TooManyRequests(RequestError):
    """Over a usage plan (RFC 6585 section 4): Retry-After, and the reset time of a quota."""

    status = 429
    phrase = "Too Many Requests"


class ServiceUnavailable(MediaproxyError):
    status = 503
    phrase = "Service Unavailable"


class UpstreamError(MediaproxyError):
    status = 502
    phrase = "Bad Gateway"


class UpstreamTimeout(UpstreamError):
    status = 504
    phrase = "Gateway Timeout"


class BufferedResponseTooLarge(UpstreamError):
    phrase = "Bad Gateway: the response is larger than buffered_max_bytes"


class Termination(enum.Enum):
    """How a stream ended; logged for every request and counted by reason."""

    COMPLETE = "complete"
    CLIENT_CLOSED = "client_closed"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    UPSTREAM_ERROR = "upstream_error"
    REJECTED = "rejected"
    SHUTDOWN = "shutdown"
    QUOTA = "quota"  # the key's plan ran out of bytes mid-stream


class ListenError(Exception):
    """The configured address cannot be listened on: one line with the address, the reason
    and what to change."""
