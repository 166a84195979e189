"""One request and its response on a client connection: Tornado's ``HTTPConnection`` of our own.

``RequestConnection`` stands where Tornado's ``HTTP1Connection`` stood on the client side. The
connection loop (``server.connections``) reads each request's header block, checks its size
and its timers, and hands it over; this class parses it, reads the body into the delegate
(Tornado's application, hence the RequestHandler), and writes the response the handler gives
it. Why our own: Tornado's class is general (client and server, detaching, gzip, 1xx) and
pays for it on every request of a small response, which is where a gateway spends its CPU:
it reads the head a second time by regular expression, toggles ``TCP_NODELAY`` twice per
request, registers and drops a close callback per request (each a change of the socket's
event registration), and wraps every write in two futures. Here the head is parsed from the
block the loop already holds, ``TCP_NODELAY`` is set once for the connection (every write is
awaited before the next, so Nagle's algorithm could only delay the last segment), and the
connection's one close callback is passed to the request waiting for its response.

What it keeps from Tornado, on purpose, so nothing a client sees changes: the request line
and fields are parsed by Tornado's strict parsers (``parse_request_start_line``,
``HTTPHeaders.parse``: obs-fold and control characters refused), a malformed request is
answered ``400 Bad Request`` and the connection closed, keep-alive follows RFC 9112 §9.3 as
Tornado reads it, 100-continue is answered before the body is read, and the response is
framed as Tornado frames it (chunked for an HTTP/1.1 response of unknown length; no body for
HEAD, 1xx, 204 and 304). The body's framing is read by the gateway's one strict parser
(``http.framing.request_body_framing``), and a chunk size by ``grammar.parse_hex_digits``.

Unlike Tornado, the 400 (like the connection loop's 414 and 431, ``refuse``) has a body and
``Connection: close``, and the connection closes after a lingering read, not with the client's
bytes unread (a reset, which can discard the status before the client reads it: RFC 9112
§9.6); and a body found malformed after the response has begun cuts the response instead of
writing a status line into its body.

The response's framing is public here (``chunking``, ``content_remaining``,
``count_body_bytes``): the zero-copy paths (``server.exchange``) send body bytes around the
IOStream and account for them, which with Tornado's class meant touching its privates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tornado import gen, httputil
from tornado.iostream import IOStream, StreamClosedError
from tornado.log import app_log, gen_log

from mediaproxy.http.framing import request_body_framing
from mediaproxy.http.grammar import GrammarError, parse_digits, parse_hex_digits

# Tornado's fairness rule for long bodies: give the loop a turn after this many bytes, each
# chunk counting at least the second figure (its per-chunk overhead dominates small chunks).
YIELD_AFTER_BYTES = 256 * 1024
CHUNK_COST_BYTES = 1024
# A chunk-size line (RFC 9112 §7.1) longer than this is refused, as Tornado refuses it.
CHUNK_LINE_MAX_BYTES = 64
_CONTINUE = b"HTTP/1.1 100 (Continue)\r\n\r\n"
READ_BYTES = 64 * 1024  # Tornado's read chunk
# After a refusal, what the client still sends is read and dropped for this long (at most
# LINGER_BYTES), so that closing does not reset the connection before it has read the status
# (RFC 9112 §9.6; nginx's lingering_close does the same, for up to lingering_time).
LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024


class _DelegateFailed(Exception):
    """The delegate raised; it is logged, and the connection closes (Tornado's rule)."""


def _settled(written: asyncio.Future[None]) -> asyncio.Future[None]:
    """A future that resolves when ``written`` does, a closed socket included: a write to a
    client that left is no error of the writer's (the close callback tells the handler).

    A write the socket took at once is returned as it is: awaiting it must not cost the
    handler more loop turns than the write did (Tornado settles it in the same call).
    """
    if written.done():
        if written.cancelled() or written.exception() is not None:
            return _resolved()
        return written
    settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(done: asyncio.Future[None]) -> None:
        if not settled.done():
            settled.set_result(None)
        if not done.cancelled():
            done.exception()  # retrieved: a closed socket is reported by the close callback

    written.add_done_callback(settle)
    return settled


def _resolved() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _closed() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(StreamClosedError())
    future.exception()  # the caller may not look; no "exception never retrieved" line
    return future


class RequestConnection(httputil.HTTPConnection):
    """One request read from ``stream`` and the response written to it."""

    def __init__(
        self,
        stream: IOStream,
        params: Any,
        context: object,
        on_reusable: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.params = params
        self.context = context
        self._on_reusable = on_reusable  # the response is out and the connection stays open
        self._max_body_size: int = (
            params.max_body_size if params.max_body_size is not None else stream.max_buffer_size
        )
        self._body_timeout: float | None = params.body_timeout
        self._request: httputil.RequestStartLine | None = None
        self._headers: httputil.HTTPHeaders | None = None
        self._read_finished = False
        self._response_begun = False  # its status line handed to the stream
        self._write_finished = False
        self._response_done = False  # finished and written out
        self._disconnect_on_finish = False
        self._close_callback: Callable[[], None] | None = None
        self._waiting: asyncio.Future[None] | None = None  # set while awaiting the response
        self._last_write: asyncio.Future[None] | None = None
        self.chunking = False  # the response body is framed as chunked
        self.content_remaining: int | None = None  # Content-Length bytes still owed

    # -- reading the request ------------------------------------------------------------

    async def serve(self, head: bytes, delegate: httputil.HTTPMessageDelegate) -> bool:
        """Parse ``head``, read the body into ``delegate``, wait for the response to be
        written. True: the connection may carry another request."""
        told_delegate = False
        try:
            start_line, headers = _parse_head(head)
            self._request, self._headers = start_line, headers
            self._disconnect_on_finish = not self._can_keep_alive(start_line, headers)
            told_delegate = True
            try:
                receiving = delegate.headers_received(start_line, headers)
                if receiving is not None:
                    await receiving
            except Exception:
                app_log.error("Uncaught exception", exc_info=True)
                raise _DelegateFailed from None
            if headers.get("Expect") == "100-continue" and not self._write_finished:
                self.stream.write(_CONTINUE)
            await self._read_body(headers, delegate)
            self._read_finished = True
            if not self._write_finished:
                try:
                    delegate.finish()
                except Exception:
                    app_log.error("Uncaught exception", exc_info=True)
                    raise _DelegateFailed from None
                told_delegate = False  # told the request is complete: its last word
            if not self._response_done and not self.stream.closed():
                self._waiting = asyncio.get_running_loop().create_future()
                await self._waiting
            return not self.stream.closed()
        except httputil.HTTPInputError as error:
            gen_log.info("Malformed HTTP message from %s: %s", self.context, error)
            if not self._response_begun:  # a response begun cannot become a 400
                await refuse(self.stream, 400, "Bad Request")
            self.stream.close()
            return False
        except _DelegateFailed:
            self.stream.close()
            return False
        finally:
            if told_delegate:
                try:
                    delegate.on_connection_close()
                except Exception:
                    app_log.error("Uncaught exception", exc_info=True)
            self._close_callback = None
            self._waiting = None

    def _can_keep_alive(
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> bool:
        """RFC 9112 §9.3, as Tornado reads it: an HTTP/1.1 connection persists unless
        "close"; an HTTP/1.0 one only when asked to, with a body it can delimit."""
        if self.params.no_keep_alive:
            return False
        connection = headers.get("Connection")
        if connection is not None:
            connection = connection.lower()
        if start_line.version == "HTTP/1.1":
            return connection != "close"
        if (
            "Content-Length" in headers
            or ("Transfer-Encoding" in headers and _body_framing(headers)[0])
            or start_line.method in ("HEAD", "GET")
        ):
            return connection == "keep-alive"
        return False

    async def _read_body(
        self, headers: httputil.HTTPHeaders, delegate: httputil.HTTPMessageDelegate
    ) -> None:
        has_body, length = _body_framing(headers)
        if "Content-Length" in headers and "," in headers["Content-Length"]:
            headers["Content-Length"] = str(length)  # repeats of one value are that value
        if length is not None and length > self._max_body_size:
            raise httputil.HTTPInputError("Content-Length too long")
        if length is None and has_body:
            reading = self._read_chunked_body(delegate)
        elif length:
            reading = self._read_fixed_body(length, delegate)
        else:
            return
        if self._body_timeout is None:
            await reading
            return
        try:
            await gen.with_timeout(
                self.stream.io_loop.time() + self._body_timeout,
                reading,
                quiet_exceptions=StreamClosedError,
            )
        except TimeoutError:
            gen_log.info("Timeout reading body from %s", self.context)
            self.stream.close()
            raise StreamClosedError() from None

    async def _deliver(self, delegate: httputil.HTTPMessageDelegate, data: bytes) -> None:
        if self._write_finished:
            return  # answered already: the rest of the body is read and dropped
        try:
            receiving = delegate.data_received(data)
            if receiving is not None:
                await receiving
        except Exception:
            app_log.error("Uncaught exception", exc_info=True)
            raise _DelegateFailed from None

    async def _read_fixed_body(self, length: int, delegate: httputil.HTTPMessageDelegate) -> None:
        work = 0
        chunk_size = self.params.chunk_size
        while length > 0:
            body = await self.stream.read_bytes(min(chunk_size, length), partial=True)
            length -= len(body)
            await self._deliver(delegate, body)
            work += len(body)
            if work >= YIELD_AFTER_BYTES:
                work = 0
                await asyncio.sleep(0)

    async def _read_chunked_body(self, delegate: httputil.HTTPMessageDelegate) -> None:
        """RFC 9112 §7.1 without chunk extensions or trailers (Tornado refuses both)."""
        total = 0
        work = 0
        chunk_size = self.params.chunk_size
        stream = self.stream
        while True:
            work += CHUNK_COST_BYTES
            if work >= YIELD_AFTER_BYTES:
                work = 0
                await asyncio.sleep(0)
            line = await stream.read_until(b"\r\n", max_bytes=CHUNK_LINE_MAX_BYTES)
            try:
                size = parse_hex_digits(line[:-2].decode("latin-1"))
            except GrammarError:
                raise httputil.HTTPInputError("invalid chunk size") from None
            if size == 0:
                if await stream.read_bytes(2) != b"\r\n":
                    raise httputil.HTTPInputError("improperly terminated chunked request")
                return
            total += size
            if total > self._max_body_size:
                raise httputil.HTTPInputError("chunked body too large")
            while size:
                piece = await stream.read_bytes(min(size, chunk_size), partial=True)
                size -= len(piece)
                await self._deliver(delegate, piece)
                work += len(piece)
            if await stream.read_bytes(2) != b"\r\n":
                raise httputil.HTTPInputError("improperly terminated chunk")

    # -- the connection's close, passed on ------------------------------------------------

    def stream_closed(self) -> None:
        """The client's connection closed (the connection loop's one close callback)."""
        if self._waiting is None:
            return  # reading: the read that fails ends the request
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()
        if not self._waiting.done():
            self._waiting.set_result(None)

    # -- HTTPConnection -------------------------------------------------------------------

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def set_body_timeout(self, timeout: float) -> None:
        self._body_timeout = timeout

    def set_max_body_size(self, max_body_size: int) -> None:
        self._max_body_size = max_body_size

    def close(self) -> None:
        self.stream.close()
        self._close_callback = None
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        """The status line and fields, and ``chunk`` if any, in one write."""
        assert isinstance(start_line, httputil.ResponseStartLine)
        self._response_begun = True
        request, request_headers = self._request, self._headers
        assert request is not None and request_headers is not None
        code = start_line.code
        version_11 = request.version == "HTTP/1.1"
        bodyless = request.method == "HEAD" or code in (204, 304) or 100 <= code < 200
        self.chunking = version_11 and not bodyless and "Content-Length" not in headers
        if version_11 and self._disconnect_on_finish:
            headers["Connection"] = "close"
        if (
            request.version == "HTTP/1.0"
            and request_headers.get("Connection", "").lower() == "keep-alive"
        ):
            headers["Connection"] = "Keep-Alive"
        if self.chunking:
            headers["Transfer-Encoding"] = "chunked"
        if request.method == "HEAD" or code == 304:
            self.content_remaining = 0
        elif "Content-Length" in headers:
            self.content_remaining = parse_digits(headers["Content-Length"])
        else:
            self.content_remaining = None
        lines = [f"HTTP/1.1 {code} {start_line.reason}"]
        lines.extend(f"{name}: {value}" for name, value in headers.get_all())
        block = "\r\n".join(lines)
        # Each line was joined by one CRLF: any other CR or LF came from a name or value.
        if block.count("\n") != len(lines) - 1 or block.count("\r") != len(lines) - 1:
            raise ValueError(f"Illegal characters (CR or LF) in header: {block[:200]!r}")
        if self.stream.closed():
            return _closed()
        data = (block + "\r\n\r\n").encode("latin-1")
        if chunk:
            data += self._framed(chunk)
        return self._write(data)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if self.stream.closed():
            return _closed()
        data = self._framed(chunk)
        if not data:  # nothing to send: done when what was sent before is
            last = self._last_write
            return _resolved() if last is None else _settled(last)
        return self._write(data)

    def finish(self) -> None:
        stream = self.stream
        if self.content_remaining and not stream.closed():
            stream.close()
            raise httputil.HTTPOutputError(
                f"Tried to write {self.content_remaining} bytes less than Content-Length"
            )
        if self.chunking and not stream.closed():
            self._last_write = stream.write(b"0\r\n\r\n")
        self._write_finished = True
        if not self._read_finished:
            # Answered before the body was read: closing is the only way not to read it.
            self._disconnect_on_finish = True
        last = self._last_write
        if last is None or last.done():
            self._finish_response()
        else:
            last.add_done_callback(self._finish_response)

    def _finish_response(self, _: object = None) -> None:
        self._response_done = True
        self._close_callback = None
        if self._disconnect_on_finish:
            self.close()
            return
        if self._on_reusable is not None:
            self._on_reusable()
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    # -- the response's body framing ----------------------------------------------------

    def count_body_bytes(self, sent: int) -> None:
        """Count ``sent`` body bytes written around the stream (zero-copy) against the
        Content-Length that ``finish`` checks."""
        assert self.content_remaining is not None, "only a Content-Length body is counted"
        self.content_remaining -= sent

    def _framed(self, chunk: bytes) -> bytes:
        if self.content_remaining is not None:
            self.content_remaining -= len(chunk)
            if self.content_remaining < 0:
                self.stream.close()  # no framing error reaches the client
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        if self.chunking and chunk:  # an empty chunk would end the body
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    def _write(self, data: bytes) -> asyncio.Future[None]:
        written = self.stream.write(data)
        self._last_write = written
        return _settled(written)


def _parse_head(head: bytes) -> tuple[httputil.RequestStartLine, httputil.HTTPHeaders]:
    """Tornado's parsing of a request head (its strict request-line and field rules)."""
    # RFC 9112 §2.2: "a server that is expecting to receive and parse a request-line SHOULD
    # ignore at least one empty line (CRLF) received prior to the request-line".
    text = head.decode("latin-1").lstrip("\r\n")
    end = text.find("\n")
    start_line = httputil.parse_request_start_line(text[:end].rstrip("\r"))
    return start_line, httputil.HTTPHeaders.parse(text[end:])


def _body_framing(headers: httputil.HTTPHeaders) -> tuple[bool, int | None]:
    """Whether the request has a body and its length (None: chunked); 400 if undecidable."""
    framing = request_body_framing(
        headers["Transfer-Encoding"] if "Transfer-Encoding" in headers else None,
        headers["Content-Length"] if "Content-Length" in headers else None,
    )
    if framing is None:
        raise httputil.HTTPInputError("the body's framing is not one Content-Length or chunked")
    return framing


async def refuse(stream: IOStream, status: int, phrase: str) -> None:
    """Answer ``status`` in plain text and close the connection, after a lingering read."""
    body = f"{status} {phrase}\n".encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        await stream.write(head + body)
        deadline = stream.io_loop.time() + LINGER_S
        dropped = 0
        while dropped < LINGER_BYTES:
            dropped += len(
                await gen.with_timeout(
                    deadline,
                    stream.read_bytes(READ_BYTES, partial=True),
                    quiet_exceptions=StreamClosedError,
                )
            )
    except (StreamClosedError, TimeoutError):
        pass
    finally:
        stream.close()
