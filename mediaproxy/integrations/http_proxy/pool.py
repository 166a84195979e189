"""Connections to an origin, kept for reuse.

``ConnectionPool`` keeps idle keep-alive connections per upstream, bounded; a connection goes
back only after an exchange that completed in both directions on a delimited body, and an idle
one that the origin closes (or that receives stray bytes) is dropped at once.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from mediaproxy.errors import UpstreamError, UpstreamTimeout
from mediaproxy.http.upstreams import Upstream
from mediaproxy.tornado_internals import buffered_read_bytes


class ConnectionPool:
    """Connections to one upstream; up to ``max_idle`` idle ones are kept for reuse."""

    def __init__(self, upstream: Upstream, *, max_idle: int, connect_timeout_s: float) -> None:
        self.upstream = upstream
        self.max_idle = max_idle
        self.connect_timeout_s = connect_timeout_s
        self._client = TCPClient()
        # https: the system's trust store and host name checks, as any HTTPS client does.
        self._tls = ssl.create_default_context() if upstream.scheme == "https" else None
        self._idle: collections.deque[IOStream] = collections.deque()

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self) -> tuple[IOStream, bool]:
        """A connected stream, and whether it was reused from the pool."""
        while self._idle:
            stream = self._idle.pop()  # the most recently used is the likeliest still open
            stream.set_close_callback(None)
            # Bytes waiting on an idle connection belong to no request: never parse them as one.
            if not stream.closed() and buffered_read_bytes(stream) == 0:
                return stream, True
            stream.close()
        return await self._connect(), False

    async def _connect(self) -> IOStream:
        upstream = self.upstream
        try:
            # Not TCPClient's own timeout: a refused connection leaves that timer (and with it
            # the failed attempt's traceback) scheduled until it expires.
            async with asyncio.timeout(self.connect_timeout_s):
                stream = await self._open()
        except TimeoutError as error:
            raise UpstreamTimeout(
                f"{upstream}: no connection within {self.connect_timeout_s:g} s ({error})"
            ) from error
        except (OSError, StreamClosedError) as error:
            cause = getattr(error, "real_error", None) or error
            raise UpstreamError(f"{upstream}: cannot connect: {cause}") from error
        stream.set_nodelay(True)  # request heads are small and must not wait for an ACK
        return stream

    async def _open(self) -> IOStream:
        """A connected stream; an address needs no resolver (whose lookups take a thread hop)."""
        host, port = self.upstream.host, self.upstream.port
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return await self._client.connect(host, port, ssl_options=self._tls)
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        stream = IOStream(socket.socket(family, socket.SOCK_STREAM))
        try:
            await stream.connect((host, port))
        except BaseException:
            stream.close()
            raise
        if self._tls is None:
            return stream
        # The TLS stream takes the socket over, and closes it if the handshake fails.
        return await stream.start_tls(False, self._tls, server_hostname=host)

    def release(self, stream: IOStream, *, reusable: bool) -> None:
        """Keep a connection whose last exchange completed cleanly; close any other."""
        if not reusable or stream.closed() or len(self._idle) >= self.max_idle:
            stream.close()
            return
        self._idle.append(stream)
        stream.set_close_callback(lambda: self._forget(stream))

    def _forget(self, stream: IOStream) -> None:
        if stream in self._idle:
            self._idle.remove(stream)

    def close(self) -> None:
        while self._idle:
            stream = self._idle.pop()
            stream.set_close_callback(None)
            stream.close()
