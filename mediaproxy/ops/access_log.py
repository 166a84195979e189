"""The access log: one JSON object per line for every exchange, cut ones included.

Tornado's own access line says 200 for a stream the gateway cut halfway; this one carries
what an operator of a streaming gateway bills and debugs by: bytes each way, time to first
byte, duration, and how the stream ended. The same ``ExchangeRecord`` feeds the metrics, so
the log and ``/metrics`` never disagree.

Lines go to stderr, nowhere, or a file opened with O_APPEND and written with one ``write``
per line, so several worker processes can share the file without tearing lines. SIGUSR1
reopens the file (logrotate's ``postrotate``; nginx's signal for it).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mediaproxy.config import ACCESS_LOG_OFF, ACCESS_LOG_STDERR
from mediaproxy.errors import Termination
from mediaproxy.integrations.base import CacheReport


@dataclass(frozen=True)
class ExchangeRecord:
    """One finished exchange, as the handler saw it."""

    route: str
    integration: str
    method: str
    path: str  # without the query: signed URLs carry their signature there
    status: int
    bytes_sent: int
    bytes_received: int
    ttfb_s: float | None  # to the first body byte; None when no body byte was sent
    duration_s: float
    termination: Termination
    client: str
    upstream_status: int | None  # what the upstream answered, for integrations that have one
    request_range: str | None  # the request's Range header, as sent
    # The part of the representation the body carried (Content-Range's form; several ranges
    # of a multipart/byteranges body together), or a 416's "bytes */size"
    content_range: str | None
    cache: CacheReport | None = None  # what a route's cache did; None: the route has none

    def to_json(self) -> str:
        fields: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "route": self.route,
            "integration": self.integration,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "ttfb_ms": None if self.ttfb_s is None else round(self.ttfb_s * 1000, 3),
            "duration_ms": round(self.duration_s * 1000, 3),
            "termination": self.termination.value,
            "client": self.client,
            "upstream_status": self.upstream_status,
            "range": bounded_header(self.request_range),
            "content_range": self.content_range,
            "cache": None if self.cache is None else self.cache.result,
        }
        return json.dumps(fields, separators=(",", ":"))


# A Range header may be as long as a request's headers (max_header_bytes): a log line stays
# one an operator can read.
MAX_LOGGED_HEADER_CHARS = 256


def bounded_header(value: str | None) -> str | None:
    """A client's header value as logged: cut to MAX_LOGGED_HEADER_CHARS, "..." saying so."""
    if value is None or len(value) <= MAX_LOGGED_HEADER_CHARS:
        return value
    return value[: MAX_LOGGED_HEADER_CHARS - 3] + "..."


class AccessLog:
    """Where the lines go: stderr or an append-only file."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._fd: int | None = None
        self.reopen()

    def reopen(self) -> None:
        """Open the file anew (after a rotation moved it away); stderr needs nothing."""
        if self.destination == ACCESS_LOG_STDERR:
            return
        fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.close()
        self._fd = fd

    def write(self, record: ExchangeRecord) -> None:
        line = record.to_json() + "\n"
        if self._fd is None:
            sys.stderr.write(line)
        else:
            os.write(self._fd, line.encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_access_log(destination: str) -> AccessLog | None:
    """The configured log; None when it is "off"."""
    return None if destination == ACCESS_LOG_OFF else AccessLog(destination)
