"""The Exchange over one Tornado handler: how an integration's response reaches the socket.

``HandlerExchange`` is the ``integrations.base.Exchange`` contract made real: ``start`` sets the
status and headers, ``flush_headers`` sends them alone, ``send`` writes a chunk (through the
route's encoder and pacer) and returns once the socket has taken it, ``send_zero_copy`` hands
files and spliced origin bodies to the kernel, ``finish`` ends the response. ``BodyChannel``
passes the request body to the integration one chunk at a time.

Reference: ``docs/design/streaming.md`` (why every flush is awaited, why exactly one is
outstanding).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable

from tornado.iostream import IOStream, StreamClosedError
from tornado.web import RequestHandler

from mediaproxy.config import Limits
from mediaproxy.http.statuses import is_bodyless
from mediaproxy.integrations.base import Exchange, Request
from mediaproxy.server.http1 import RequestConnection
from mediaproxy.server.usage import KeyUsage
from mediaproxy.streaming import compression
from mediaproxy.streaming.pacing import Pacer
from mediaproxy.streaming.precedence import FirstBytes
from mediaproxy.streaming.timers import StreamTimers
from mediaproxy.streaming.zerocopy import (
    ZERO_COPY_MAX_BYTES,
    ZERO_COPY_MIN_BYTES,
    ZERO_COPY_WAIT_PIECE_BYTES,
    ZeroCopySource,
)

log = logging.getLogger("mediaproxy")

_END_OF_BODY = b""


class BodyChannel:
    """Request body chunks from Tornado to the integration, one at a time.

    A request without a body (most of them) gets a channel with no queue: nothing to
    allocate, nothing to wait for.
    """

    def __init__(self, expect_body: bool = True) -> None:
        self._queue: asyncio.Queue[bytes] | None = asyncio.Queue(maxsize=1) if expect_body else None
        self._closed = False
        self._ending: asyncio.Future[None] | None = None

    async def put(self, chunk: bytes) -> None:
        if not self._closed and self._queue is not None:
            await self._queue.put(chunk)

    def end(self) -> None:
        """The body is complete. Never waits: the integration may not read to the end."""
        if self._closed or self._queue is None:
            return
        try:
            self._queue.put_nowait(_END_OF_BODY)
        except asyncio.QueueFull:  # the integration has not taken the last chunk yet
            self._ending = asyncio.ensure_future(self._queue.put(_END_OF_BODY))

    def close(self) -> None:
        """The integration is done: whatever is still coming is discarded, nothing blocks."""
        self._closed = True
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait()

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._queue is None:
            return
        while (chunk := await self._queue.get()) is not _END_OF_BODY:
            yield chunk


class HandlerExchange(Exchange):
    """The Exchange interface over one GatewayHandler."""

    def __init__(
        self,
        handler: RequestHandler,
        request: Request,
        limits: Limits,
        body: BodyChannel,
        timers: StreamTimers,
        first_bytes: FirstBytes,
        compress: bool = False,
        compress_min_bytes: int = 0,
    ) -> None:
        self.request = request
        self.limits = limits
        self._compress = compress
        self._compress_min_bytes = compress_min_bytes
        self._encoder: compression.Encoder | None = None  # set by start() when compressing
        self._handler = handler
        self._body = body
        self._timers = timers
        self._started = False
        self._last_send_waited = False
        self.status = 0
        self.bytes_sent = 0
        self.first_byte_at: float | None = None  # time.perf_counter()
        self._pacer = (
            Pacer(limits.rate_limit_bytes_per_s, limits.rate_limit_after_bytes)
            if limits.rate_limit_bytes_per_s
            else None
        )
        self.upstream_status: int | None = None
        self.meter: KeyUsage | None = None  # the key's quotas, charged before bytes go out
        self._first_bytes = first_bytes
        first_bytes.waiting(self)

    def body(self) -> AsyncIterator[bytes]:
        return self._body.chunks()

    def start(
        self, status: int, headers: Iterable[tuple[str, str]], reason: str | None = None
    ) -> None:
        handler = self._handler
        handler.set_status(status, reason)
        fields = list(headers)
        if self._compress:
            fields, self._encoder = compression.begin(
                status,
                fields,
                self.request.headers.get("Accept-Encoding"),
                send_body=self.request.method != "HEAD",
                min_bytes=self._compress_min_bytes,
            )
        # The first field of a name replaces Tornado's default of that name (Date, Server);
        # later ones of the same name are added beside it.
        named: set[str] = set()
        for name, value in fields:
            folded = name.lower()
            if folded == "content-range":
                self.content_range = value
            if folded in named:
                handler.add_header(name, value)
            else:
                named.add(folded)
                handler.set_header(name, value)
        self.status = status

    @property
    def started(self) -> bool:
        return self._started

    @property
    def last_send_waited(self) -> bool:
        return self._last_send_waited

    async def flush_headers(self) -> None:
        await self._send_now(b"")  # past the encoder and the pacer: headers only, no body byte

    async def send(self, chunk: bytes) -> None:
        if self._encoder is not None:
            chunk = self._encoder.compress(chunk)
        if self.meter is not None and chunk:
            await self.meter.cover(len(chunk))
        if self._pacer is None or not chunk:
            await self._send_now(chunk)
        else:
            await self._send_paced(chunk, self._pacer)  # the rate counts bytes on the wire

    async def _send_paced(self, chunk: bytes, pacer: Pacer) -> None:
        """The route's rate limit: pieces of the chunk, each when the schedule allows it."""
        loop = asyncio.get_running_loop()
        paused = False
        offset = 0
        while offset < len(chunk):
            wait_s = pacer.wait_s(loop.time())
            if wait_s > 0:
                paused = True
                await asyncio.sleep(wait_s)
                self._timers.progress()  # our own pause is not the stream standing still
            piece = chunk[offset : offset + pacer.piece_bytes()]
            await self._send_now(piece)
            pacer.record(len(piece))
            offset += len(piece)
        # Paced, the client is effectively slow: the integration should read small chunks.
        self._last_send_waited = self._last_send_waited or paused

    async def _send_now(self, chunk: bytes) -> None:
        handler = self._handler
        handler.write(chunk)
        # From here the headers may be on the wire, even if flush() raises: a failure must
        # cut the connection, never write a status page as if it were this response's body.
        self._started = True
        flushed = handler.flush()
        stream = handler.request.connection.stream  # type: ignore[union-attr]
        # Still writing after flush() returned: the kernel did not take it all at once.
        self._last_send_waited = stream.writing()
        await flushed
        self._sent(len(chunk))

    def _sent(self, length: int) -> None:
        """Account body bytes the socket took; an empty send (the headers alone) is none."""
        if length and self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
            self._first_bytes.started(self)
        self.bytes_sent += length
        self._timers.progress()

    async def begin_zero_copy(self, length: int) -> bool:
        # Compressed bodies need to pass through send(); the kernel's copy bypasses it.
        if length < ZERO_COPY_MIN_BYTES or self._encoder is not None:
            return False
        if not self._started:
            await self.flush_headers()  # through Tornado: now it accounts the body
        return _zero_copy_possible(self._handler.request.connection)

    async def send_zero_copy(self, source: ZeroCopySource) -> None:
        connection = self._handler.request.connection
        assert isinstance(connection, RequestConnection)
        stream = connection.stream
        loop = asyncio.get_running_loop()
        pacer = self._pacer
        while source.remaining:
            wanted = self._first_bytes.send_bytes(min(source.remaining, ZERO_COPY_MAX_BYTES))
            if pacer is not None:
                wait_s = pacer.wait_s(loop.time())
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                    self._timers.progress()  # our own pause is not the stream standing still
                    continue
                wanted = min(wanted, pacer.piece_bytes())
            if self.meter is not None:
                wanted = min(wanted, self.meter.step_bytes)
                await self.meter.cover(wanted)  # before the check below: it may wait
            if stream.closed():
                # A failed write closed the socket, and the connection resolves the flush of
                # a closed stream without an error: the descriptor may already be another
                # connection's.
                raise StreamClosedError(real_error=stream.error)
            try:
                sent = source.transfer(stream.socket, wanted)
            except (BrokenPipeError, ConnectionResetError) as error:
                raise StreamClosedError(real_error=error) from error
            if self.meter is not None:
                self.meter.give_back(wanted - sent)
            if sent:
                # The connection counts the body bytes it writes against Content-Length;
                # these it never saw. (Checked present by _zero_copy_possible.)
                connection.count_body_bytes(sent)
                self._sent(sent)
                if pacer is not None:
                    pacer.record(sent)
                await asyncio.sleep(0)  # a turn of the loop for everyone else (precedence)
            else:
                # The client's socket is full or the source has nothing yet. Tornado knows how
                # to wait for either: give it a small copied piece and go on once that is out.
                piece = await source.piece(min(ZERO_COPY_WAIT_PIECE_BYTES, source.remaining))
                if self.meter is not None:
                    await self.meter.cover(len(piece))
                await self._send_now(piece)
                if pacer is not None:
                    pacer.record(len(piece))

    async def finish(self) -> None:
        if (
            self.request.method == "HEAD"
            and not self._started
            and not is_bodyless(self._handler.get_status())
        ):
            # Tornado's finish() would add "Content-Length: 0" where the integration set none
            # (a compressed or streamed GET has none): the headers go out as they are first.
            # A 204 or 304 is left to finish(), which trims it as it trims the GET's.
            await self.flush_headers()
        self._started = True
        if self._encoder is not None:
            self._handler.write(self._encoder.finish())
        await self._handler.finish()

    def progress(self) -> None:
        self._timers.progress()


def _zero_copy_possible(connection: object) -> bool:
    """The kernel's copy needs a plain TCP socket and a Content-Length body the connection
    accounts."""
    return (
        isinstance(connection, RequestConnection)
        and type(connection.stream) is IOStream
        and not connection.chunking
        and connection.content_remaining is not None
    )
