"""An HTTP origin behind a route: requests relayed as they arrive, responses as they stream.

``/prefix/a/b?q=1`` goes to ``{upstream}a/b?q=1`` with any method; status, reason, headers
(minus hop-by-hop ones, plus X-Forwarded-* and Via) and body come back untouched, a gzip body
stays gzip, a response without Content-Type gets none. Both directions are flow-controlled:
the origin is read only as fast as the client drains (``relay.ResponseRelay``), and an
upload is read from the client only as fast as the origin accepts it (each write awaited).

Failures, in the terms of ``errors``: no connection → 502 (504 when the connect timeout
expires); the origin closes or sends garbage before its headers → 502; no headers before the
route's idle timer fires → 504 (the handler turns the cancellation into it). After the headers
have gone out, any failure cuts the client connection instead, so a short Content-Length body
or a chunked body without its last chunk tells the client the truth. A body the origin frames
by closing the connection (neither Content-Length nor chunked) reaches the client chunked,
and if it is cut, nobody can tell: HTTP/1.1 gives no way to (RFC 9112 §6.3).

``transfer_mode = "buffered"`` is the legacy gateway behaviour, kept to show the difference:
the whole response is collected (at most ``buffered_max_bytes``, within ``buffered_timeout``)
and sent with a Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol

from tornado.httputil import RequestStartLine
from tornado.iostream import IOStream, StreamClosedError

from mediaproxy.config import Route
from mediaproxy.errors import BufferedResponseTooLarge, UpstreamError, UpstreamTimeout
from mediaproxy.http.headers import (
    forward_request_headers,
    forward_response_headers,
    is_delimited,
    keeps_alive,
    may_retry,
    via_entry,
)
from mediaproxy.http.statuses import is_bodyless
from mediaproxy.http.upstreams import Upstream, public_base
from mediaproxy.integrations.base import Exchange, Integration
from mediaproxy.integrations.cache.serve import OriginUser, RangeCache
from mediaproxy.integrations.http_proxy.pool import ConnectionPool
from mediaproxy.integrations.http_proxy.relay import (
    LAST_CHUNK,
    MIN_CHUNK_BYTES,
    ResponseHead,
    ResponseRelay,
    UpstreamClosedEarly,
    frame_chunk,
    relay_sizer,
    request_head,
)
from mediaproxy.integrations.http_proxy.settings import HttpProxySettings
from mediaproxy.streaming.zerocopy import SPLICE_AVAILABLE, ZERO_COPY_WAIT_PIECE_BYTES, SplicedBody
from mediaproxy.tornado_internals import buffered_read_bytes


class UpstreamUser(Protocol):
    """Whom an upstream exchange reports to: a client's Exchange, or a cache fill that
    serves several clients."""

    upstream_status: int | None

    def progress(self) -> None: ...


class RoundTrip:
    """One request and response on one upstream connection."""

    def __init__(
        self, stream: IOStream, pool: ConnectionPool, exchange: UpstreamUser, method: str
    ) -> None:
        self.stream = stream
        self._pool = pool
        plain_tcp = type(stream) is IOStream and SPLICE_AVAILABLE  # not TLS, and Linux
        self.relay = ResponseRelay(
            stream, exchange.progress, head_request=method == "HEAD", may_splice=plain_tcp
        )
        self._progress = exchange.progress
        self.set_chunk_size(MIN_CHUNK_BYTES)  # a pooled stream may keep a larger one
        self._sender: asyncio.Task[bool] | None = None

    def send_request(
        self,
        start_line: RequestStartLine,
        fields: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
        *,
        chunked: bool,
    ) -> None:
        """Start sending; a body goes on in its own task while the response is awaited."""
        if chunked:
            fields = [*fields, ("Transfer-Encoding", "chunked")]
        head = request_head(start_line, fields)
        if body is not None:
            self._sender = asyncio.ensure_future(self._send_body(head, body, chunked))
            return
        with contextlib.suppress(StreamClosedError):
            self.stream.write(head)  # a closed stream: reading the head says so, and how

    async def _send_body(self, head: bytes, body: AsyncIterator[bytes], chunked: bool) -> bool:
        stream = self.stream
        try:
            await stream.write(head)
            async for data in body:
                if data:
                    await stream.write(frame_chunk(data) if chunked else data)
                    self._progress()
            if chunked:
                await stream.write(LAST_CHUNK)
            return True
        except StreamClosedError:
            return False  # the response's reader meets the same closed stream and reports it

    async def splice_body(self, exchange: Exchange) -> None:
        """Move the whole body from the origin's socket to the client's (``SplicedBody``)."""
        relay, stream = self.relay, self.stream
        assert relay.splice_length is not None
        # Tornado reads for us only the pieces a wait needs, never more behind our back.
        self.set_chunk_size(ZERO_COPY_WAIT_PIECE_BYTES)

        def origin_fd() -> int | None:
            return None if stream.closed() else stream.socket.fileno()

        async def read(max_bytes: int) -> bytes:
            try:
                return await stream.read_bytes(max_bytes, partial=True)
            except StreamClosedError as error:
                raise UpstreamError(
                    f"upstream response cut before its "
                    f"{relay.splice_length} body bytes: "
                    f"{error.real_error or 'closed'}"
                ) from error

        with SplicedBody(
            origin_fd, relay.splice_length, buffered=lambda: buffered_read_bytes(stream), read=read
        ) as body:
            await exchange.send_zero_copy(body)
        relay.spliced()

    def set_chunk_size(self, size_bytes: int) -> None:
        """How much the next reads from the origin may take at once."""
        self.relay.chunk_size = size_bytes
        # Tornado returns a partial read after one recv: its size is what really counts.
        self.stream.read_chunk_size = size_bytes

    def reusable_after(self, method: str, head: ResponseHead) -> bool:
        """Once the body has ended: whether the connection may carry another exchange."""
        if self._sender is not None and not (self._sender.done() and self._sender.result()):
            return False  # the origin answered before the upload was through
        return (
            self.relay.reusable
            and keeps_alive(head.version, head.fields)
            and is_delimited(method, head.status, head.fields)
        )

    def release(self, *, reusable: bool) -> None:
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        self._pool.release(self.stream, reusable=reusable)


class UpstreamClient:
    """Exchanges with one upstream over a pool of kept-alive connections.

    The part of the proxy that other integrations reuse (an object store is an origin whose
    requests are signed): it sends a request line and headers, yields once the response
    headers are in, and releases the connection after.
    """

    def __init__(self, upstream: Upstream, *, max_idle: int, connect_timeout_s: float) -> None:
        self.upstream = upstream
        self.pool = ConnectionPool(upstream, max_idle=max_idle, connect_timeout_s=connect_timeout_s)

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        exchange: UpstreamUser,
        start_line: RequestStartLine,
        fields: list[tuple[str, str]],
        *,
        body: AsyncIterator[bytes] | None = None,
        content_length: int | None = None,
    ) -> AsyncIterator[tuple[RoundTrip, ResponseHead]]:
        """Send the request and yield once its response headers are in; release after.

        The connection goes back to the pool only if the body was read to its end by the
        caller and nothing went wrong; any exception, a cancellation included, closes it.
        A pooled connection the origin closed meanwhile is retried on a fresh one, for an
        idempotent request without a body (whose body would otherwise be gone).
        """
        method = start_line.method
        while True:
            stream, reused = await self.pool.acquire()
            upstream = RoundTrip(stream, self.pool, exchange, method)
            reusable = False
            try:
                upstream.send_request(
                    start_line,
                    fields,
                    body,
                    chunked=body is not None and content_length is None,
                )
                try:
                    head = await upstream.relay.head()
                except UpstreamClosedEarly:
                    if reused and body is None and may_retry(method):
                        continue
                    raise
                exchange.upstream_status = head.status
                yield upstream, head
                reusable = upstream.reusable_after(method, head)
                return
            finally:
                upstream.release(reusable=reusable)

    def close(self) -> None:
        self.pool.close()


async def relay_body(
    exchange: Exchange, upstream: RoundTrip, body: AsyncIterator[bytes] | None = None
) -> None:
    """Send the response body as the origin delivers it, read as fast as the client takes it.

    ``body`` is the relay's iterator when the caller has already taken some of it. This is
    where the body's path is chosen: by the kernel (splice) when the origin is plain TCP with a
    Content-Length body and the client's side allows it (``Exchange.begin_zero_copy``: plain
    TCP, not compressed); copied through Python in every other case.
    """
    length = upstream.relay.splice_length
    if body is None and length is not None and await exchange.begin_zero_copy(length):
        await upstream.splice_body(exchange)
        return
    with relay_sizer() as sizer:
        async for chunk in body or upstream.relay.body():
            # Not the loop's clock: uvloop's counts whole milliseconds, as coarse as the send
            # target itself.
            sent_at = time.perf_counter()
            await exchange.send(chunk)
            sizer.observe(len(chunk), time.perf_counter() - sent_at, exchange.last_send_waited)
            upstream.set_chunk_size(sizer.size)


class HttpProxyIntegration(Integration):
    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self.settings: HttpProxySettings = route.settings
        self.client = UpstreamClient(
            self.settings.upstream,
            max_idle=self.settings.max_idle_connections,
            connect_timeout_s=self.settings.connect_timeout_s,
        )
        self.pool = self.client.pool
        self.cache = (
            None
            if self.settings.cache is None
            else RangeCache(self.settings.cache, route.prefix, _CacheOrigin(self))
        )

    async def respond(self, exchange: Exchange) -> None:
        if self.settings.transfer_mode == "buffered":
            await self._respond_buffered(exchange)
        elif self.cache is not None:
            request = exchange.request
            await self.cache.respond(
                exchange,
                self._respond_streaming,
                target=self.settings.upstream.target(request.path, request.query),
                restricted=self.route.access.restricted,
            )
        else:
            await self._respond_streaming(exchange)

    async def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.client.close()

    async def _respond_streaming(self, exchange: Exchange) -> None:
        async with self._exchange(exchange) as (upstream, head):
            exchange.start(
                head.status, self._response_headers(exchange, head), _printable(head.reason)
            )
            if not upstream.relay.body_waiting():
                await exchange.flush_headers()  # a slow body should not hold the headers back
            await relay_body(exchange, upstream)
        await exchange.finish()

    async def _respond_buffered(self, exchange: Exchange) -> None:
        limits = exchange.limits
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(limits.buffered_timeout_s):
                async with self._exchange(exchange) as (upstream, head):
                    declared = head.content_length
                    if declared is not None and declared > limits.buffered_max_bytes:
                        raise BufferedResponseTooLarge(
                            f"Content-Length {declared} > {limits.buffered_max_bytes}"
                        )
                    async for chunk in upstream.relay.body():
                        chunks.append(chunk)
                        if upstream.relay.body_bytes > limits.buffered_max_bytes:
                            raise BufferedResponseTooLarge(
                                f"over {limits.buffered_max_bytes} bytes"
                            )
        except TimeoutError as error:
            raise UpstreamTimeout(
                f"no complete response within buffered_timeout ({limits.buffered_timeout_s:g} s)"
            ) from error
        body = b"".join(chunks)
        headers = self._response_headers(exchange, head)
        if exchange.request.method != "HEAD" and not is_bodyless(head.status):
            headers = [
                (name, value) for name, value in headers if name.lower() != "content-length"
            ] + [("Content-Length", str(len(body)))]
        exchange.start(head.status, headers, _printable(head.reason))
        await exchange.send(body)
        await exchange.finish()

    def _exchange(
        self, exchange: Exchange
    ) -> contextlib.AbstractAsyncContextManager[tuple[RoundTrip, ResponseHead]]:
        """The client's request, forwarded: ``UpstreamClient.exchange`` with its body."""
        request = exchange.request
        has_body, content_length = request.has_body, request.content_length
        upstream_url = self.settings.upstream
        fields = forward_request_headers(
            list(request.headers.get_all()),
            client_ip=request.remote_ip,
            client_scheme=request.scheme,
            client_host=request.host,
            client_version=request.version,
            upstream_host=upstream_url.authority,
            content_length=content_length,
        )
        start_line = RequestStartLine(
            request.method, upstream_url.target(request.path, request.query), "HTTP/1.1"
        )
        return self.client.exchange(
            exchange,
            start_line,
            fields,
            body=exchange.body() if has_body else None,
            content_length=content_length,
        )

    def _response_headers(self, exchange: Exchange, head: ResponseHead) -> list[tuple[str, str]]:
        request = exchange.request
        base = public_base(request.scheme, request.host, request.mount + request.prefix)
        fields = forward_response_headers(head.fields, upstream_version=head.version)
        return [
            (
                name,
                self.settings.upstream.rewrite_location(value, base)
                if name.lower() == "location"
                else value,
            )
            for name, value in fields
        ]


class _CacheOrigin:
    """The route's origin as the cache asks it for bytes: a GET of the route's own target,
    with the cache's fields and none of any client's (the answer is shared)."""

    def __init__(self, route: HttpProxyIntegration) -> None:
        self._route = route

    def fetch(
        self, user: OriginUser, target: str, fields: list[tuple[str, str]]
    ) -> contextlib.AbstractAsyncContextManager[tuple[RoundTrip, ResponseHead]]:
        upstream = self._route.settings.upstream
        sent = [("Host", upstream.authority), ("Via", via_entry("HTTP/1.1")), *fields]
        start_line = RequestStartLine("GET", target, "HTTP/1.1")
        return self._route.client.exchange(user, start_line, sent)


def _printable(reason: str) -> str | None:
    """The origin's reason phrase if it survives re-encoding, else Tornado's standard one."""
    return reason if reason.isascii() and reason.isprintable() else None
