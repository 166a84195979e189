"""Client connections before a request exists: how many, how long a header may take, how
large it may be, and TLS handshakes that fail.

``GatewayServer`` is Tornado's HTTPServer with its connection loop replaced
(``ClientConnection``), because Tornado's own cannot do three things HTTP asks for:

* **A header block over the limit is answered.** Tornado stops reading at
  ``max_header_size`` and closes the connection inside IOStream, with no status. RFC 9110
  §15.5.15: 414 (URI Too Long) when the request line alone does not fit, §15.5.20 via RFC 6585
  §5: 431 (Request Header Fields Too Large) when the block does not; then the connection is
  closed (after a short lingering read, so the status is not lost to a reset).
* **Reading a header has its own timer.** Tornado times it with ``idle_connection_timeout``,
  the same timer that bounds how long a kept-alive connection may sit idle between requests.
  Here a new connection has ``header_timeout`` to deliver its first complete header block (the
  TLS handshake included), a kept-alive one ``idle_timeout`` for its next request to begin and
  then ``header_timeout`` for that header to complete (nginx: client_header_timeout and
  keepalive_timeout).
* **Open connections are capped** (``max_client_connections``, per process): beyond it a new
  connection is closed as soon as it is accepted, without a response, as a full accept queue
  would; a line says so at most once a minute.

The loop reads the header block itself, checks it, and hands it to a ``RequestConnection``
(``server.http1``), which parses it, reads the body and writes the response; bytes past the
block (a pipelined request, a body) go back into the stream's read buffer.

Tornado logs a WARNING for every TLS handshake that fails (``SSLIOStream._do_ssl_handshake``:
"SSL Error on FD PEER: ERROR"): plain HTTP sent to the TLS port, scanners, clients with no
protocol version or cipher in common. None of them is the gateway's fault, and anyone can cause
one per connection, so an operator's log would fill with them. ``HandshakeFailureLog`` turns
each into a debug line of our own, and at most one info line per interval says that they
happen and where the rest went.

The Tornado internals this relies on (putting bytes back into a stream's read buffer, the
request context, the handshake WARNING) are in
``mediaproxy.tornado_internals``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerConnectionDelegate
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from mediaproxy.server.http1 import READ_BYTES, RequestConnection, refuse
from mediaproxy.tornado_internals import (
    HANDSHAKE_FAILURE_FORMAT,
    HANDSHAKE_FAILURE_LOGGER,
    HEADER_BLOCK_END,
    open_connections,
    request_context,
    track_connection,
    unread,
)

log = logging.getLogger("mediaproxy")

# One line a minute says connections are being refused without letting clients flood the log.
REFUSAL_LOG_INTERVAL_S = 60.0

# One line a minute tells an operator that handshakes fail without letting clients flood it.
HANDSHAKE_INFO_INTERVAL_S = 60.0


class HandshakeFailureLog(logging.Filter):
    """Tornado's per-handshake WARNING, replaced by our own lines (install with ``install``)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = HANDSHAKE_INFO_INTERVAL_S,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._interval_s = interval_s
        self._next_info_at = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != HANDSHAKE_FAILURE_FORMAT or not isinstance(record.args, tuple):
            return True
        _, peer, error = record.args
        now = self._clock()
        if now >= self._next_info_at:
            self._next_info_at = now + self._interval_s
            log.info(
                "TLS handshake with %s failed: %s (plain HTTP to the TLS port, or no common "
                "version or cipher); more within %g s are logged at debug level",
                peer,
                error,
                self._interval_s,
            )
        else:
            log.debug("TLS handshake with %s failed: %s", peer, error)
        return False

    def install(self) -> None:
        logging.getLogger(HANDSHAKE_FAILURE_LOGGER).addFilter(self)

    def uninstall(self) -> None:
        logging.getLogger(HANDSHAKE_FAILURE_LOGGER).removeFilter(self)


class _Once:
    """True at most once per interval (a rate limit for one log line)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._next_at = float("-inf")

    def __call__(self) -> bool:
        now = self._clock()
        if now < self._next_at:
            return False
        self._next_at = now + self._interval_s
        return True


def _retrieve(future: asyncio.Future[bytes]) -> None:
    if not future.cancelled():
        future.exception()


class _HeadTooLarge(Exception):
    def __init__(self, status: int, phrase: str) -> None:
        super().__init__(phrase)
        self.status, self.phrase = status, phrase


class ClientConnection(HTTP1ServerConnection):
    """One client connection: each request's header block read and checked here, then served
    by a ``RequestConnection``."""

    def __init__(self, stream: IOStream, server: GatewayServer, context: object) -> None:
        super().__init__(stream, server.conn_params, context)
        self._server = server
        self._serving: asyncio.Future[None] | None = None
        self._request: RequestConnection | None = None  # the one being served
        self._next_read: Awaitable[bytes] | None = None  # begun as a response ended
        self._head_late = False  # the head's timer closed the stream

    def start_serving(self, delegate: HTTPServerConnectionDelegate) -> None:
        # Every write is awaited before the next: Nagle's algorithm could only hold back the
        # last segment of each response.
        self.stream.set_nodelay(True)
        # One close callback for the connection's life, passed to the request awaiting its
        # response: registering one per request changes the socket's event registration.
        self.stream.set_close_callback(self._stream_closed)
        self._serving = asyncio.ensure_future(self._serve(delegate))

    async def close(self) -> None:
        self.stream.close()
        if self._serving is not None:
            await asyncio.wait([self._serving])

    def _stream_closed(self) -> None:
        if self._request is not None:
            self._request.stream_closed()

    async def _serve(self, delegate: HTTPServerConnectionDelegate) -> None:
        """Tornado's request loop (HTTP1ServerConnection), a checked header block first."""
        try:
            first = True
            while (head := await self._await_head(first)) is not None:
                first = False
                await asyncio.sleep(0)  # Tornado's turn for other connections between requests
                request = RequestConnection(
                    self.stream, self.params, self.context, self._read_ahead
                )
                self._request = request
                try:
                    if not await request.serve(head, delegate.start_request(self, request)):
                        return
                except (StreamClosedError, UnsatisfiableReadError, asyncio.CancelledError):
                    return
                except Exception:
                    log.exception("reading a request failed")
                    request.close()
                    return
                finally:
                    self._request = None
        finally:
            if isinstance(self._next_read, asyncio.Future):  # its failure: the close, seen
                self._next_read.add_done_callback(_retrieve)
            delegate.on_close(self)

    def _read_ahead(self) -> None:
        """Begin reading the next request the moment a response is out: a stream nobody
        reads from when the next request arrives drops its interest in reading, and takes it
        up again once read from (two changes of the socket's registration per request)."""
        try:
            self._next_read = self.stream.read_bytes(READ_BYTES, partial=True)
        except StreamClosedError:
            self._next_read = None

    async def _await_head(self, first: bool) -> bytes | None:
        """One complete header block, within the timers; what follows it stays in the
        stream. None: the connection ends."""
        server = self._server
        stream = self.stream
        loop = asyncio.get_running_loop()
        # One timer that closes the stream: cheaper than a timeout around every read.
        timer = loop.call_later(
            server.header_timeout_s if first else server.idle_timeout_s, self._head_too_late
        )
        data = bytearray()
        try:
            while True:
                reading, self._next_read = self._next_read, None
                piece = await (reading or stream.read_bytes(READ_BYTES, partial=True))
                searched_from = max(0, len(data) - 3)
                data += piece
                end = self._head_end(data, searched_from)
                if end is not None:
                    break
                if len(data) == len(piece) and not first:  # the request has begun
                    timer.cancel()
                    timer = loop.call_later(server.header_timeout_s, self._head_too_late)
        except StreamClosedError:
            if self._head_late:
                log.debug(
                    "%s: no complete request header within %s",
                    self.context,
                    "header_timeout" if data or first else "idle_timeout",
                )
            return None
        except _HeadTooLarge as refusal:
            timer.cancel()
            await self._refuse(refusal)
            return None
        finally:
            timer.cancel()  # a pending timer would hold the connection until it fires
        if end < len(data):
            unread(stream, bytes(data[end:]))
        return bytes(data[:end])

    def _head_too_late(self) -> None:
        self._head_late = True
        self.stream.close()

    def _head_end(self, data: bytearray, searched_from: int) -> int | None:
        """Where the header block in ``data`` ends, if it is whole; _HeadTooLarge if it
        cannot fit."""
        limit = self._server.max_header_bytes
        found = HEADER_BLOCK_END.search(data, searched_from)
        if found is not None and found.end() <= limit:
            return found.end()
        if found is None and len(data) < limit:
            return None
        if data.find(b"\n", 0, limit) < 0:
            raise _HeadTooLarge(414, "URI Too Long")
        raise _HeadTooLarge(431, "Request Header Fields Too Large")

    async def _refuse(self, refusal: _HeadTooLarge) -> None:
        """The status, then a lingering read, then close."""
        log.debug(
            "%s: request header over %d bytes: %d",
            self.context,
            self._server.max_header_bytes,
            refusal.status,
        )
        await refuse(self.stream, refusal.status, refusal.phrase)


class GatewayServer(HTTPServer):
    """HTTPServer with ``ClientConnection`` for its connections (see the module docstring)."""

    # HTTPServer is a tornado Configurable: its constructor's arguments go to initialize().
    def initialize(  # type: ignore[override]
        self,
        application: Any,
        *,
        header_timeout_s: float,
        idle_timeout_s: float,
        max_header_bytes: int,
        max_client_connections: int,
        max_body_size: int,
        ssl_options: ssl.SSLContext | None,
    ) -> None:
        super().initialize(
            application,
            xheaders=False,
            max_body_size=max_body_size,
            max_header_size=max_header_bytes,
            ssl_options=ssl_options,
        )
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_header_bytes = max_header_bytes
        self.max_client_connections = max_client_connections
        self._refusal_line = _Once(REFUSAL_LOG_INTERVAL_S)
        self._handshake_log = HandshakeFailureLog() if ssl_options is not None else None
        if self._handshake_log is not None:
            self._handshake_log.install()

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        if 0 < self.max_client_connections <= open_connections(self):
            if self._refusal_line():
                log.warning(
                    "max_client_connections (%d) reached: new connections are closed "
                    "at once (this line at most once a minute)",
                    self.max_client_connections,
                )
            stream.close()
            return
        context = request_context(stream, address, self.protocol, self.trusted_downstream)
        connection = ClientConnection(stream, self, context)
        track_connection(self, connection)  # HTTPServer's on_close and close_all_connections
        connection.start_serving(self)

    def stop(self) -> None:
        super().stop()
        if self._handshake_log is not None:
            self._handshake_log.uninstall()
            self._handshake_log = None
