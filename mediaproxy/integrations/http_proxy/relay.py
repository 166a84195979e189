"""HTTP/1.1 to an origin, read by the task that relays it, with flow control both ways.

Why not ``tornado.httpclient``: ``simple_httpclient`` puts a total deadline on the whole body
(``request_timeout``), a 100 MB ceiling on streamed bodies, decodes gzip, and a stalled origin
cannot be cancelled; ``curl_httpclient`` cannot await a streaming callback at all
(docs/design/streaming.md). Here the gateway owns the socket: ``ConnectionPool`` connects an
IOStream, ``request_head`` writes the request, and ``ResponseRelay`` reads the response from
the stream in the request's own task: the head up to its empty line (within
``MAX_HEADER_BYTES``, parsed by ``heads.parse_response_head``), then the body one read at a
time, each read made only when the consumer asks for the next chunk, i.e. after the client took
the previous one: the origin is read exactly as fast as the client drains, one chunk in memory
per stream. No task, queue or future of ours stands between the socket and the client, so a
cancellation (a timer, the client leaving) lands in the read being awaited, and the caller
closes the stream.

What delimits the body is decided by ``framing.response_body_length`` alone; a chunked body is
decoded by llhttp (``httptools``, uvicorn's parser). llhttp does not read the head: it refuses
repeats of one Content-Length, which RFC 9110 §8.6 lets a recipient take as that one length.

How much is read at once follows the client (``ChunkSizer``): 16 KiB while it is slow, up
to 1 MiB while it keeps up, within one budget for all relayed streams that grows with what
their clients drain (``relay_budget``, see ``mediaproxy.streaming.chunks``), so that 200 slow
clients stay small while fast ones pay a fraction of the CPU per byte. A plain TCP origin's
Content-Length body does not come here at all: it is spliced (``mediaproxy.streaming.zerocopy``).
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass

import httptools
from tornado.httputil import HTTPHeaders, RequestStartLine
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from mediaproxy.errors import UpstreamError
from mediaproxy.http.framing import InvalidFraming, response_body_length
from mediaproxy.http.heads import MalformedHead, ParsedHead, parse_response_head
from mediaproxy.http.statuses import is_bodyless
from mediaproxy.streaming.chunks import ChunkBudget, ChunkShare, DrainRate
from mediaproxy.streaming.zerocopy import ZERO_COPY_MIN_BYTES
from mediaproxy.tornado_internals import buffered_read_bytes

# Reads from the origin start small and grow while the client keeps up (ChunkSizer).
# Large reads cost less CPU per byte; small ones keep many slow clients small in memory
# (bench/RESULTS.md, "Figures behind code comments").
MIN_CHUNK_BYTES = 16 * 1024
MAX_CHUNK_BYTES = 1024 * 1024
SEND_TARGET_S = 0.01  # 1 MiB in 10 ms: a client at 100 MB/s or more gets the largest chunks
GROW_AFTER_SENDS = 4
# Tornado's default header block limit (nginx: proxy_buffer_size 4-8 KiB, far stricter).
MAX_HEADER_BYTES = 64 * 1024
# Where a head ends: Tornado's rule, so that an origin ending its lines with a bare LF is
# still read (heads.py).
HEAD_END = rb"\r?\n\r?\n"
_LINE_BREAK = re.compile(r"[\r\n]")


class UpstreamClosedEarly(UpstreamError):
    """The origin closed the connection (or sent garbage) before any response header."""


class UpstreamMalformed(UpstreamError):
    """The origin's response head came, but its body cannot be delimited (RFC 9112 §6.3)."""


@dataclass(frozen=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    # As the origin sent them, but for Content-Length: its checked value, in one field.
    fields: list[tuple[str, str]]
    # The body's length as the origin declared it, checked (``response_body_length``); None
    # if chunked or delimited by the connection closing.
    content_length: int | None = None

    @functools.cached_property
    def headers(self) -> HTTPHeaders:
        """The fields by name, for a caller that looks some up."""
        headers = HTTPHeaders()
        for name, value in self.fields:
            headers.add(name, value)
        return headers


def request_head(start_line: RequestStartLine, fields: Iterable[tuple[str, str]]) -> bytes:
    """The request line and header block, as Tornado's HTTP1Connection would write them."""
    lines = [f"{start_line.method} {start_line.path} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in fields)
    for line in lines:
        if _LINE_BREAK.search(line):
            raise ValueError(f"line break in a request head line: {line[:80]!r}")
    return b"%b\r\n%b\r\n\r\n" % (lines[0].encode(), "\r\n".join(lines[1:]).encode("latin-1"))


class ResponseRelay:
    """The origin's response, read from its stream as the consumer asks for it.

    With ``may_splice`` (a plain TCP origin, on Linux), a response whose body has a
    Content-Length of at least ``ZERO_COPY_MIN_BYTES`` says so in ``splice_length``: the
    request's task may then move the body itself, straight from the socket, and call
    ``spliced()`` when it is done, or read it through ``body()`` as any other.
    """

    def __init__(
        self,
        stream: IOStream,
        on_bytes: Callable[[], None],
        *,
        head_request: bool = False,
        may_splice: bool = False,
    ) -> None:
        self._stream = stream
        self._on_bytes = on_bytes
        self._head_request = head_request
        self._may_splice = may_splice and not head_request
        self._remaining: int | None = None  # of a Content-Length body
        self._chunked: _ChunkedBody | None = None
        self.chunk_size = MIN_CHUNK_BYTES
        self.splice_length: int | None = None
        self.body_bytes = 0
        self.complete = False  # the body ended where its framing says
        self.stray = False  # bytes came after the body's end: the connection is out of step

    async def head(self) -> ResponseHead:
        """The final response's head (interim 1xx ones are skipped), its body's framing read."""
        parsed = await self._read_head()
        while parsed.status < 200:
            # RFC 9110 §15.2: an interim response is the origin's business with us; it never
            # has content, so one that announces some is out of step (Tornado's rule too).
            if any(name.lower() in _FRAMING_FIELDS for name, _ in parsed.fields):
                raise UpstreamClosedEarly(f"upstream interim {parsed.status} announces a body")
            parsed = await self._read_head()
        fields = parsed.fields
        transfer_encoding = _joined(fields, "transfer-encoding")
        try:
            declared = response_body_length(
                parsed.status,
                head_request=self._head_request,
                transfer_encoding=transfer_encoding,
                content_length=_joined(fields, "content-length"),
            )
        except InvalidFraming as error:
            # Never passed on: the client would be told a length the body does not have.
            raise UpstreamMalformed(f"upstream response framing: {error}") from None
        if declared is not None:
            fields = _one_content_length(fields, declared)  # repeats become one
        if self._head_request or is_bodyless(parsed.status) or declared == 0:
            self.complete = True
        elif declared is not None:
            self._remaining = declared
            if self._may_splice and declared >= ZERO_COPY_MIN_BYTES:
                self.splice_length = declared
        elif transfer_encoding is not None:
            self._chunked = _ChunkedBody()
        return ResponseHead(parsed.version, parsed.status, parsed.reason, fields, declared)

    async def _read_head(self) -> ParsedHead:
        try:
            block = await self._stream.read_until_regex(HEAD_END, max_bytes=MAX_HEADER_BYTES)
        except (StreamClosedError, UnsatisfiableReadError) as error:
            cause = getattr(error, "real_error", None) or error
            reason = f": {cause}" if str(cause) else ""
            raise UpstreamClosedEarly(
                f"upstream closed the connection or sent a malformed "
                f"response before its headers{reason}"
            ) from None
        self._on_bytes()
        try:
            return parse_response_head(block)
        except MalformedHead as error:
            raise UpstreamClosedEarly(f"upstream sent a malformed response head: {error}") from None

    def body_waiting(self) -> bool:
        """Whether the body (or its end) has already arrived: the head can go out with it."""
        return self.complete or buffered_read_bytes(self._stream) > 0

    @property
    def reusable(self) -> bool:
        """Whether the body was read to its end and nothing came after it."""
        return self.complete and not self.stray

    async def body(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; the next is read from the origin when this one is done."""
        while not self.complete:
            data = await self._read_body()
            if data:
                self.body_bytes += len(data)
                yield data

    async def _read_body(self) -> bytes:
        stream, remaining, chunked = self._stream, self._remaining, self._chunked
        try:
            if remaining is not None:
                data = await stream.read_bytes(min(self.chunk_size, remaining), partial=True)
                self._remaining = remaining - len(data)
                self.complete = self._remaining == 0
            elif chunked is not None:
                data = chunked.decode(await stream.read_bytes(self.chunk_size, partial=True))
                self.complete, self.stray = chunked.complete, chunked.stray
            else:
                data = await stream.read_bytes(self.chunk_size, partial=True)
        except StreamClosedError as error:
            if remaining is None and chunked is None:
                self.complete = True  # the connection's end is the body's (RFC 9112 §6.3)
                return b""
            raise UpstreamError(
                f"upstream response cut after {self.body_bytes} body bytes"
                f"{f': {error.real_error}' if error.real_error else ''}"
            ) from None
        self._on_bytes()
        return data

    def spliced(self) -> None:
        """The request's task moved the whole body from the socket."""
        assert self.splice_length is not None
        self.body_bytes = self.splice_length
        self._remaining = 0
        self.complete = True


_FRAMING_FIELDS = ("content-length", "transfer-encoding")


def _joined(fields: list[tuple[str, str]], name: str) -> str | None:
    """The values of field ``name`` (lower case) joined by commas, as Tornado's headers join
    repeated field lines; None if absent."""
    values = [value for field, value in fields if field.lower() == name]
    return ",".join(values) if values else None


def _one_content_length(fields: list[tuple[str, str]], length: int) -> list[tuple[str, str]]:
    """``fields`` with the first Content-Length set to ``length`` and any other dropped."""
    kept: list[tuple[str, str]] = []
    seen = False
    for name, value in fields:
        if name.lower() == "content-length":
            if seen:
                continue
            seen, value = True, str(length)
        kept.append((name, value))
    return kept


class _ChunkedBody:
    """A chunked body's data (RFC 9112 §7.1), decoded by llhttp; trailer fields are dropped."""

    # llhttp parses messages: it is handed a head that says "chunked", then the body.
    _HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self.complete = False
        self.stray = False
        self._parser = httptools.HttpResponseParser(self)
        self._parser.feed_data(self._HEAD)

    def decode(self, data: bytes) -> bytes:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            if not self.complete:
                raise UpstreamError(f"upstream chunked body malformed: {error}") from None
            self.stray = True
        pieces, self._pieces = self._pieces, []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    # --- llhttp's callbacks ---

    def on_message_begin(self) -> None:
        self.stray = self.complete  # a second message: bytes past the body's end

    def on_body(self, data: bytes) -> None:
        self._pieces.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


class ChunkSizer:
    """One relayed stream's read size: what its client takes within ``SEND_TARGET_S``.

    It doubles after a run of sends the socket took at once or within the target (one run
    proves little: a slow client frees room in its socket buffers in bursts), and after a
    slower send it drops to what that send showed the client drains in the target time.
    """

    def __init__(self, share: ChunkShare) -> None:
        self._share = share
        self._streak = 0

    @property
    def size(self) -> int:
        return self._share.size

    def observe(self, sent_bytes: int, send_s: float, waited: bool) -> None:
        self._share.drained(sent_bytes)
        if waited and send_s > SEND_TARGET_S:
            self._streak = 0
            self._share.resize(min(self.size, int(sent_bytes / send_s * SEND_TARGET_S)))
            return
        self._streak += 1
        if self._streak == GROW_AFTER_SENDS:
            self._streak = 0
            self._share.resize(self.size * 2)


# The floor is enough for one fast stream at full size; 200 slow ones at the minimum already
# exceed it, so they never grow on the floor alone. Above it the budget follows what the clients
# drain: what they took in the last RELAY_DRAIN_WINDOW_S, per second, times RELAY_HORIZON_S, so
# that many fast clients (a gigabyte a second between them) read large chunks while many slow
# ones, draining little in sum, stay at the floor (bench/RESULTS.md).
RELAY_FLOOR_BYTES = 2 * 1024 * 1024
RELAY_CEILING_BYTES = 32 * 1024 * 1024
RELAY_DRAIN_WINDOW_S = 0.25
RELAY_HORIZON_S = 2 * SEND_TARGET_S  # the chunk being sent and the one being read
relay_budget = ChunkBudget(
    RELAY_FLOOR_BYTES,
    min_bytes=MIN_CHUNK_BYTES,
    max_bytes=MAX_CHUNK_BYTES,
    drain=DrainRate(time.monotonic, RELAY_DRAIN_WINDOW_S),
    horizon_s=RELAY_HORIZON_S,
    ceiling_bytes=RELAY_CEILING_BYTES,
)


@contextlib.contextmanager
def relay_sizer(budget: ChunkBudget = relay_budget) -> Iterator[ChunkSizer]:
    """A read size for one relayed stream, held in ``budget`` while the stream runs."""
    with budget.share() as share:
        yield ChunkSizer(share)


def frame_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1), for methods Tornado does not frame."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
