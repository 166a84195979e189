"""HTTP/1.1 to an origin on Tornado's own connection class, with flow control in both directions.

Why not ``tornado.httpclient``: ``simple_httpclient`` puts a total deadline on the whole body
(``request_timeout``), a 100 MB ceiling on streamed bodies, decodes gzip, and a stalled origin
cannot be cancelled; ``curl_httpclient`` cannot await a streaming callback at all
(docs/design/streaming.md). Here the gateway owns the socket: ``TCPClient`` connects,
``HTTP1Connection`` speaks HTTP/1.1 on it, and ``ResponseRelay`` (its message delegate) hands
the response over one piece at a time. ``HTTP1Connection`` awaits what ``data_received``
returns before it reads the socket again, and the relay resolves that only when the consumer
asks for the next chunk, i.e. after the client took the previous one: the origin is read
exactly as fast as the client drains, one chunk in memory per stream.

The consumer runs in the request's own task; ``HTTP1Connection`` runs in a reader task of its
own. That separation matters: a delegate method that raises (a cancellation included) is
logged by Tornado as an uncaught error and swallowed, so cancellation must never reach Tornado
code through the delegate. It reaches the request's task instead, whose ``finally`` closes the
upstream stream and lets the reader task end on ``StreamClosedError``.

How much is read at once follows the client (``ChunkSizer``): 16 KiB while it is slow, up
to 1 MiB while it keeps up, within one budget for all relayed streams that grows with what
their clients drain (``relay_budget``, see ``mediaproxy.streaming.chunks``), so that 200 slow
clients stay small while fast ones pay a fraction of the CPU per byte. A plain TCP origin's
Content-Length body does not come here at all: it is spliced (``mediaproxy.streaming.zerocopy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import HTTPHeaders, HTTPMessageDelegate, RequestStartLine, ResponseStartLine

from mediaproxy.errors import UpstreamError
from mediaproxy.http.framing import InvalidFraming, response_body_length
from mediaproxy.http.grammar import MAX_INT64
from mediaproxy.http.statuses import is_bodyless
from mediaproxy.streaming.chunks import ChunkBudget, ChunkShare, DrainRate
from mediaproxy.streaming.zerocopy import ZERO_COPY_MIN_BYTES

# Reads from the origin start small and grow while the client keeps up (ChunkSizer).
# Large reads cost less CPU per byte; small ones keep many slow clients small in memory
# (bench/RESULTS.md, "Figures behind code comments").
MIN_CHUNK_BYTES = 16 * 1024
MAX_CHUNK_BYTES = 1024 * 1024
SEND_TARGET_S = 0.01  # 1 MiB in 10 ms: a client at 100 MB/s or more gets the largest chunks
GROW_AFTER_SENDS = 4
# Tornado's default header block limit (nginx: proxy_buffer_size 4-8 KiB, far stricter).
MAX_HEADER_BYTES = 64 * 1024
# Streams have no size ceiling; Tornado's default would be 100 MB, even for streamed bodies.
# A larger Content-Length than this is refused by response_body_length first.
NO_BODY_CEILING = MAX_INT64


def connection_parameters() -> HTTP1ConnectionParameters:
    """Bodies passed through undecoded, unbounded, untimed (the route's timers time them)."""
    return HTTP1ConnectionParameters(
        no_keep_alive=False,
        chunk_size=MIN_CHUNK_BYTES,
        max_header_size=MAX_HEADER_BYTES,
        max_body_size=NO_BODY_CEILING,
        decompress=False,
    )


class UpstreamClosedEarly(UpstreamError):
    """The origin closed the connection (or sent garbage) before any response header."""


class UpstreamMalformed(UpstreamError):
    """The origin's response head came, but its body cannot be delimited (RFC 9112 §6.3)."""


@dataclass(frozen=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: HTTPHeaders
    # The body's length as the origin declared it, checked (``response_body_length``); None
    # if chunked or delimited by the connection closing.
    content_length: int | None = None


@dataclass(frozen=True)
class _Chunk:
    data: bytes
    taken: asyncio.Future[None]


class _End:
    pass


_END = _End()  # the body is complete
_CUT = _End()  # the connection ended first (harmless when queued after _END: never read)
_Piece = ResponseHead | _Chunk | _End


class ResponseRelay(HTTPMessageDelegate):
    """The upstream response, from Tornado's reader task to the request's task.

    With ``may_splice`` (a plain TCP origin, on Linux), a response whose body has a
    Content-Length of at least ``ZERO_COPY_MIN_BYTES`` keeps the reader waiting after its head:
    the request's task may then move the body itself, straight from the socket
    (``splice_length`` says how long it is, ``spliced()`` that it is done), or call ``body()``,
    which lets the reader go on as usual.
    """

    def __init__(
        self, on_bytes: Callable[[], None], *, head_request: bool = False, may_splice: bool = False
    ) -> None:
        self._pieces: asyncio.Queue[_Piece] = asyncio.Queue()
        self._on_bytes = on_bytes
        self._head_request = head_request
        self._may_splice = may_splice and not head_request
        self._held: asyncio.Future[None] | None = None
        self._abandoned = False
        self._declared_bytes: int | None = None
        self._arrived_bytes = 0
        self._parked: asyncio.Future[None] | None = None
        self._headers: HTTPHeaders | None = None
        self.splice_length: int | None = None
        self.body_bytes = 0
        self.failure: BaseException | None = None

    # --- HTTPMessageDelegate: called by HTTP1Connection in the reader task -------------------

    def headers_received(
        self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders
    ) -> asyncio.Future[None] | None:
        assert isinstance(start_line, ResponseStartLine)
        self._on_bytes()
        if start_line.code < 200:
            return None  # an interim 1xx is the origin's business with us
        try:
            self._declared_bytes = response_body_length(
                start_line.code,
                head_request=self._head_request,
                transfer_encoding=headers.get("Transfer-Encoding"),
                content_length=headers.get("Content-Length"),
            )
        except InvalidFraming as error:
            # Never passed on: the client would be told a length the body does not have.
            # Tornado refuses the body too (or, for framing it accepts, the connection is
            # closed unread when the exchange fails); nothing here may raise into Tornado.
            self.failure = UpstreamMalformed(f"upstream response framing: {error}")
            self._pieces.put_nowait(_CUT)
            return None
        if self._declared_bytes is not None:
            headers["Content-Length"] = str(self._declared_bytes)  # repeats become one
        self._pieces.put_nowait(
            ResponseHead(
                start_line.version,
                start_line.code,
                start_line.reason,
                headers,
                self._declared_bytes,
            )
        )
        if (
            self._may_splice
            and self._declared_bytes is not None
            and self._declared_bytes >= ZERO_COPY_MIN_BYTES
            and not is_bodyless(start_line.code)
        ):
            self.splice_length = self._declared_bytes
            self._headers = headers
            self._parked = asyncio.get_running_loop().create_future()
            return self._parked
        return None

    def data_received(self, chunk: bytes) -> asyncio.Future[None] | None:
        if self._abandoned:
            return None
        self._on_bytes()
        self._arrived_bytes += len(chunk)
        taken = asyncio.get_running_loop().create_future()
        self._pieces.put_nowait(_Chunk(chunk, taken))
        if self._arrived_bytes == self._declared_bytes:
            # The last chunk of a known length: let the reader finish now, so the connection
            # is back in the pool by the time the client has the last byte and asks again.
            return None
        return taken

    def finish(self) -> None:
        self._pieces.put_nowait(_END)

    def on_connection_close(self) -> None:
        self._pieces.put_nowait(_CUT)

    async def read(self, connection: HTTP1Connection) -> bool:
        """Run the reader: True when the connection may carry another exchange."""
        try:
            return await connection.read_response(self)
        except Exception as error:  # StreamClosedError, UnsatisfiableReadError, ...
            self.failure = self.failure or error
            return False
        finally:
            self._pieces.put_nowait(_CUT)

    # --- the consumer side, in the request's task ---------------------------------------------

    async def head(self) -> ResponseHead:
        piece = await self._pieces.get()
        if isinstance(piece, ResponseHead):
            return piece
        if isinstance(self.failure, UpstreamMalformed):
            raise self.failure
        reason = f": {self.failure}" if self.failure and str(self.failure) else ""
        raise UpstreamClosedEarly(
            f"upstream closed the connection or sent a malformed "
            f"response before its headers{reason}"
        )

    def body_waiting(self) -> bool:
        """Whether the body (or its end) has already arrived: the head can go out with it."""
        return not self._pieces.empty()

    async def body(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; the next is read from the origin when this one is done."""
        self._resume()
        while True:
            piece = await self._pieces.get()
            if piece is _END:
                return
            if not isinstance(piece, _Chunk):
                raise UpstreamError(
                    f"upstream response cut after {self.body_bytes} body bytes"
                    f"{f': {self.failure}' if self.failure else ''}"
                )
            self._held = piece.taken
            self.body_bytes += len(piece.data)
            yield piece.data
            self._release_held()

    def _release_held(self) -> None:
        if self._held is not None and not self._held.done():
            self._held.set_result(None)
        self._held = None

    def spliced(self) -> None:
        """The request's task moved the whole body from the socket: the reader reads none."""
        assert self._headers is not None and self.splice_length is not None
        self.body_bytes = self.splice_length
        # HTTP1Connection reads the body its Content-Length announces, after the head; the
        # bytes are gone, and none of the next response's may be taken for them.
        self._headers["Content-Length"] = "0"
        self._resume()

    def _resume(self) -> None:
        if self._parked is not None and not self._parked.done():
            self._parked.set_result(None)

    def abandon(self) -> None:
        """No more pieces are wanted: unblock the reader so it can run into the closed stream."""
        self._abandoned = True
        self._resume()
        self._release_held()
        while not self._pieces.empty():
            piece = self._pieces.get_nowait()
            if isinstance(piece, _Chunk) and not piece.taken.done():
                piece.taken.set_result(None)


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
