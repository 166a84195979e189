"""Connections to an origin, kept for reuse.

``ConnectionPool`` keeps idle keep-alive connections per upstream, bounded; a connection goes
back only after an exchange that completed in both directions on a delimited body, and an idle
one that the origin closes (or that receives stray bytes) is dropped at once.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import os
import select
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
        self._family = _address_family(upstream.host)

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
            sock = self._start_connect()
            if sock is not None and self._tls is None and _connected_at_once(sock):
                # Loopback and nearby origins: the kernel finished the handshake inside
                # connect(), so the request can go out now instead of after a loop turn.
                return IOStream(sock)
            # Not TCPClient's own timeout: a refused connection leaves that timer (and with it
            # the failed attempt's traceback) scheduled until it expires.
            async with asyncio.timeout(self.connect_timeout_s):
                return await self._finish_connect(sock)
        except TimeoutError as error:
            raise UpstreamTimeout(
                f"{upstream}: no connection within {self.connect_timeout_s:g} s ({error})"
            ) from error
        except (OSError, StreamClosedError) as error:
            cause = getattr(error, "real_error", None) or error
            raise UpstreamError(f"{upstream}: cannot connect: {cause}") from error

    def _start_connect(self) -> socket.socket | None:
        """A socket whose connection to an address upstream has begun; None for a host name,
        which needs the resolver (whose lookups take a thread hop)."""
        if self._family is None:
            return None
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # Request heads are small and must not wait for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = sock.connect_ex((self.upstream.host, self.upstream.port))
            if error not in (0, errno.EINPROGRESS):
                raise OSError(error, os.strerror(error))
        except BaseException:
            sock.close()
            raise
        return sock

    async def _finish_connect(self, sock: socket.socket | None) -> IOStream:
        """The connected stream (TLS if the upstream is https), once the connection is up."""
        host, port = self.upstream.host, self.upstream.port
        if sock is None:
            stream = await self._client.connect(host, port, ssl_options=self._tls)
            stream.set_nodelay(True)
            return stream
        try:
            await _writable(sock)
            _raise_connect_error(sock)
        except BaseException:
            sock.close()
            raise
        stream = IOStream(sock)
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


def _address_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for an address; None for a host name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _connected_at_once(sock: socket.socket) -> bool:
    """Whether a connection begun without blocking is already up; OSError (the socket closed)
    if it has already failed."""
    # poll, not select: select cannot take a descriptor numbered past FD_SETSIZE, and a
    # gateway with many clients holds more descriptors than that.
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    try:
        ready = bool(poller.poll(0))  # writable, or failed (POLLERR and POLLHUP always count)
        if ready:
            _raise_connect_error(sock)
    except BaseException:
        sock.close()
        raise
    return ready


def _raise_connect_error(sock: socket.socket) -> None:
    """The error a connection attempt ended with, if any (reading it clears it)."""
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


async def _writable(sock: socket.socket) -> None:
    """Wait until the socket is writable: its connection is up, or has failed."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_writer(sock.fileno(), wake)
    try:
        await waiter
    finally:
        loop.remove_writer(sock.fileno())
