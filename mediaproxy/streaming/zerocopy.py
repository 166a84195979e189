"""Bodies the kernel moves without Python touching a byte: a file region, a spliced origin body.

Both are sources for one sending loop (the exchange's ``send_zero_copy``), which owns the
client socket: it asks a source to ``transfer`` at most what it may send now, and when the
source moves less (the client's socket is full, or the origin has sent nothing yet) it hands
Tornado one small copied ``piece`` of the body to send. Tornado then waits for whichever side
was not ready, so no descriptor is ever registered with the loop behind Tornado's back, and the
piece is all the user-space memory a waiting stream holds.

``SplicedBody`` moves an origin's Content-Length body socket → pipe → socket with splice(2)
(Linux; HAProxy's ``option splice-response`` is the precedent). It reads from the origin only
what the client's socket has room for, and only once the pipe is empty, so the origin is read
as fast as the client drains and no more than the client can take waits in the pipe. Bytes
Tornado had already read from the origin socket (past the response head, or for a piece) go
out first, through Tornado, keeping the body in order.
"""

from __future__ import annotations

import fcntl
import os
import socket
import termios
from collections.abc import Awaitable, Callable
from typing import Protocol

from mediaproxy.errors import UpstreamError

SPLICE_AVAILABLE = hasattr(os, "splice")  # Linux, Python 3.10+
# Below this, one copy costs less than the extra calls (and, for splice, setting up a pipe).
ZERO_COPY_MIN_BYTES = 64 * 1024
ZERO_COPY_MAX_BYTES = 8 * 1024 * 1024  # per call, so one client cannot hog the loop
# What a waiting stream costs in memory: one such piece. Its size does not set how often the
# loop wakes (the kernel reports a socket writable only once much more than this is free), so it
# is small: 200 slow clients peaked lower with 2 KiB pieces than with 16 KiB ones
# (bench/RESULTS.md).
ZERO_COPY_WAIT_PIECE_BYTES = 2 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# HAProxy's default splice pipe is 64 KiB (tune.pipesize); a larger one moves a fast client's
# body in fewer calls. A refused size (pipe-max-size, or an unprivileged user over
# pipe-user-pages-soft) leaves the pipe at the kernel's default, which still works.
PIPE_BYTES = 1024 * 1024


class ZeroCopySource(Protocol):
    """A body the sending loop can move to a socket without copying it through Python."""

    remaining: int

    def transfer(self, client: socket.socket, max_bytes: int) -> int:
        """Move up to ``max_bytes`` to the socket now; fewer (0 too) when a side is not ready."""

    def piece(self, max_bytes: int) -> Awaitable[bytes]:
        """The next bytes of the body, copied: what Tornado sends while it waits for a side."""


class FileRegion:
    """``length`` bytes of an open file from ``offset``, by sendfile(2)."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = fd
        self.offset = offset
        self.remaining = length

    def transfer(self, client: socket.socket, max_bytes: int) -> int:
        try:
            sent = os.sendfile(client.fileno(), self.fd, self.offset, max_bytes)
        except BlockingIOError:
            return 0
        if sent == 0:
            raise OSError(f"file shrank while being sent (at byte {self.offset})")
        self.offset += sent
        self.remaining -= sent
        return sent

    async def piece(self, max_bytes: int) -> bytes:
        data = os.pread(self.fd, max_bytes, self.offset)
        if len(data) != max_bytes:
            raise OSError(f"file shrank while being read (at byte {self.offset + len(data)})")
        self.offset += len(data)
        self.remaining -= len(data)
        return data


class SplicedBody:
    """An origin body of known length, moved origin socket → pipe → client socket.

    ``origin_fd`` is the origin socket's descriptor while it is open (None once closed: asked
    before every call, since a closed descriptor's number is soon another connection's);
    ``buffered`` says how many body bytes Tornado has already read from that socket, and
    ``read`` takes up to n of them (or waits for the origin and reads them; it raises
    ``UpstreamError`` if the origin is gone): all come from the origin's IOStream, which stays
    the only reader the loop knows for that socket.
    Use it as a context manager: the pipe is closed on the way out, whatever happened.
    """

    def __init__(
        self,
        origin_fd: Callable[[], int | None],
        length: int,
        buffered: Callable[[], int],
        read: Callable[[int], Awaitable[bytes]],
    ) -> None:
        self.remaining = length
        self._origin_fd = origin_fd
        self._buffered = buffered
        self._read = read
        self._in_pipe = 0
        self._pipe_r, self._pipe_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(self._pipe_w, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default size: smaller moves, same bytes
        self._pipe_bytes = fcntl.fcntl(self._pipe_w, getattr(fcntl, "F_GETPIPE_SZ", 1032))

    def __enter__(self) -> SplicedBody:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pipe_r >= 0:
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            self._pipe_r = self._pipe_w = -1

    def transfer(self, client: socket.socket, max_bytes: int) -> int:
        if not self._in_pipe:
            origin_fd = self._origin_fd()
            if origin_fd is None or self._buffered():
                # Tornado's bytes are older than anything still in the socket: they go first,
                # as pieces; and once it has closed the socket, its number may be another's.
                return 0
            wanted = min(max_bytes, self.remaining, self._pipe_bytes, _room(client))
            if wanted <= 0:
                return 0
            try:
                moved = os.splice(origin_fd, self._pipe_w, wanted, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                return 0  # the origin has sent nothing yet
            except OSError as error:  # the origin's, not the client's: it must not read as one
                raise UpstreamError(f"upstream connection failed mid-body: {error}") from error
            if moved == 0:
                raise UpstreamError(
                    f"upstream closed the connection with {self.remaining} body bytes still to come"
                )
            self._in_pipe = moved
        try:
            sent = os.splice(
                self._pipe_r, client.fileno(), min(self._in_pipe, max_bytes), flags=_SPLICE_FLAGS
            )
        except BlockingIOError:
            return 0
        self._in_pipe -= sent
        self.remaining -= sent
        return sent

    async def piece(self, max_bytes: int) -> bytes:
        if self._in_pipe:
            data = os.read(self._pipe_r, min(max_bytes, self._in_pipe))
            self._in_pipe -= len(data)
        elif buffered := self._buffered():
            data = await self._read(min(buffered, self.remaining))  # in memory already: all of it
        else:
            data = await self._read(min(max_bytes, self.remaining))
        self.remaining -= len(data)
        return data


def _room(client: socket.socket) -> int:
    """What the client's send buffer can still take: its size less what is queued in it."""
    queued = int.from_bytes(fcntl.ioctl(client.fileno(), termios.TIOCOUTQ, bytes(4)), "little")
    return client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - queued
