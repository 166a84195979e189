"""The one small interface between the Tornado wiring and every integration.

An integration answers one request through an ``Exchange``: it reads the request (and, when it
wants it, the request body as it arrives), starts the response, sends chunks and finishes.
It never sees Tornado. Every ``send`` waits until the socket has taken the chunk, so an
integration that awaits it is flow-controlled by the client for free.

The contract, in order: ``start`` sets the status and headers (nothing is sent yet); the
headers go out with the first ``send`` or ``send_file``, or at once with ``flush_headers``
(a response whose body may be slow to come); ``finish`` completes the response. ``finish`` is
optional: when ``respond`` returns, the server finishes an exchange that is not finished yet,
so an integration calls it only to complete the response before work of its own that follows.

Timers and client disconnects reach an integration as cancellation: its task is cancelled at
whatever it awaits, so ``finally`` blocks (closing a file, an upstream socket, a cursor) are
where it cleans up. An integration signals failure by raising a ``MediaproxyError``: before the
response starts it becomes a status; after, the connection is aborted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from tornado.httputil import HTTPHeaders

from mediaproxy.config import Limits, Route
from mediaproxy.streaming import diskio
from mediaproxy.streaming.zerocopy import FileRegion, ZeroCopySource


@dataclass(frozen=True)
class Request:
    """One request as an integration sees it; its path read once (``mediaproxy.http.paths``)."""

    method: str
    # Below the route prefix, still percent-encoded: "/a/b%20c", "/" or "". Normalised (RFC
    # 3986 normal form, nothing ambiguous in it), or as sent on a route with raw_path = true.
    path: str
    query: str  # raw, without the "?"
    headers: HTTPHeaders
    remote_ip: str
    # Where the client reached the gateway: the server's public_url when set, else the
    # request's own scheme and Host.
    scheme: str
    host: str
    prefix: str  # the route prefix that matched, e.g. "/media"
    version: str = "HTTP/1.1"  # the client's protocol, as its request line said
    # The same path decoded, one string per segment: ("a", "b c"); "/a/" is ("a", ""). Octets
    # that are not UTF-8 are lone surrogates (surrogateescape); a raw path's may hold "/".
    segments: tuple[str, ...] = ()
    mount: str = ""  # the public_url's path in front of every route: "" or "/gw"
    # How the request's body is framed, read once when the request was routed: whether there
    # is one, and its declared length (None: chunked, or no body).
    has_body: bool = False
    content_length: int | None = None


@dataclass
class CacheReport:
    """What a route's cache did for one exchange; the access log, metrics and status page
    show it."""

    result: str  # HIT, MISS, REVALIDATED or BYPASS (the X-Cache values)
    bytes_from_cache: int = 0  # body bytes sent from stored slices; the rest came from fills
    # The route's cache as the exchange ended: bytes on disk, slices evicted and bytes read
    # from the origin so far (in this process).
    size_bytes: int = 0
    evictions: int = 0
    origin_bytes: int = 0


class Exchange(ABC):
    """One request and its response, as an integration sees them."""

    request: Request
    limits: Limits
    # What the upstream answered, for integrations that have one: the access log shows it.
    upstream_status: int | None = None
    # What part of the representation the body carries, in Content-Range's form: set from the
    # response's Content-Range by start(), by an integration for a multipart/byteranges body
    # (every part's range). The access log and the status page show it.
    content_range: str | None = None
    cache: CacheReport | None = None  # set by a route's cache (integrations.cache)

    @abstractmethod
    def body(self) -> AsyncIterator[bytes]:
        """The request body, chunk by chunk as the client sends it (read it at most once)."""

    @abstractmethod
    def start(
        self, status: int, headers: Iterable[tuple[str, str]], reason: str | None = None
    ) -> None:
        """Set the status and headers; they are sent with the first chunk or on finish."""

    @property
    @abstractmethod
    def started(self) -> bool:
        """True once the response headers have been sent: errors can no longer be a status."""

    @abstractmethod
    async def flush_headers(self) -> None:
        """Send the status and headers now, with no body byte, and wait until the socket has
        taken them; afterwards ``started`` is true."""

    @abstractmethod
    async def send(self, chunk: bytes) -> None:
        """Send a chunk and wait until the socket has taken it."""

    @property
    @abstractmethod
    def last_send_waited(self) -> bool:
        """True if the socket could not take the last chunk at once: the client is the limit."""

    async def send_file(self, fd: int, offset: int, length: int) -> None:
        """Send ``length`` bytes of an open file from ``offset``, flow-controlled.

        By the kernel (``sendfile``) where the exchange allows it, else read on a thread pool.
        """
        if await self.begin_zero_copy(length):
            await self.send_zero_copy(FileRegion(fd, offset, length))
        else:
            await diskio.send_by_reading(self, fd, offset, length)

    async def begin_zero_copy(self, length: int) -> bool:
        """Whether a body of ``length`` may go out by ``send_zero_copy`` (headers sent first).

        This copying exchange never allows it; one on a plain socket may.
        """
        return False

    async def send_zero_copy(self, source: ZeroCopySource) -> None:
        """Send what ``source`` holds, by the kernel; only after ``begin_zero_copy`` said yes."""
        raise NotImplementedError("begin_zero_copy() said no")

    @abstractmethod
    async def finish(self) -> None:
        """Complete the response (the body is whole). Optional: see the module docstring."""

    @abstractmethod
    def progress(self) -> None:
        """Bytes moved somewhere the exchange cannot see (an upstream): not idle."""


class Integration(ABC):
    """A source of responses for one route."""

    def __init__(self, route: Route) -> None:
        self.route = route

    @abstractmethod
    async def respond(self, exchange: Exchange) -> None:
        """Answer one request; raise a MediaproxyError to fail it."""

    async def close(self) -> None:
        """Release what the integration holds across requests (pools, connections)."""
