"""How the http_proxy's pool opens a connection to an origin: real sockets on loopback.

A connection the kernel completes inside connect() (loopback, a nearby origin) is handed over
without waiting for the event loop; one that completes later is waited for; either way the
socket sends small writes at once (TCP_NODELAY).
"""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from tornado.iostream import IOStream

from mediaproxy.errors import UpstreamError
from mediaproxy.http.upstreams import Upstream
from mediaproxy.integrations.http_proxy.pool import ConnectionPool

from .support import closed_port


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        yield listening


def pool_for(port: int, connect_timeout_s: float = 5.0) -> ConnectionPool:
    return ConnectionPool(
        Upstream.parse(f"http://127.0.0.1:{port}/"), max_idle=4, connect_timeout_s=connect_timeout_s
    )


async def acquire_counting_turns(pool: ConnectionPool) -> tuple[IOStream, bool]:
    """A fresh connection, and whether the loop ran anything else while it was opened."""
    turns: list[None] = []
    asyncio.get_running_loop().call_soon(turns.append, None)
    stream, reused = await pool.acquire()
    assert not reused
    return stream, bool(turns)


def test_a_connection_completed_inside_connect_takes_no_loop_turn(
    listener: socket.socket,
) -> None:
    async def main() -> list[bool]:
        pool = pool_for(listener.getsockname()[1])
        waited: list[bool] = []
        for _ in range(10):
            stream, turned = await acquire_counting_turns(pool)
            waited.append(turned)
            stream.close()
        pool.close()
        return waited

    waited = asyncio.run(main())
    # The kernel may, under load, finish a handshake after connect() returns; but loopback
    # normally completes it inside the call, and then the request must not wait for the loop.
    assert not all(waited), "every connection waited for a loop turn"


def test_origin_connections_send_small_writes_at_once(listener: socket.socket) -> None:
    async def main() -> int:
        pool = pool_for(listener.getsockname()[1])
        stream, _ = await pool.acquire()
        try:
            return stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            stream.close()
            pool.close()

    assert asyncio.run(main()) != 0


def test_a_connection_completed_later_is_waited_for() -> None:
    """A full accept queue drops the SYN; once there is room, the retransmitted one gets in."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        port = listening.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            room = threading.Timer(0.2, lambda: listening.accept()[0].close())
            room.start()

            async def main() -> tuple[bool, float]:
                pool = pool_for(port)
                started = time.monotonic()
                stream, turned = await acquire_counting_turns(pool)
                elapsed = time.monotonic() - started
                try:
                    stream.write(b"x")  # connected: the write goes out
                    return turned, elapsed
                finally:
                    stream.close()
                    pool.close()

            try:
                turned, elapsed_s = asyncio.run(main())
            finally:
                room.join()
    assert turned
    assert elapsed_s >= 0.2


def test_a_refused_connection_is_an_upstream_error() -> None:
    async def main() -> None:
        pool = pool_for(closed_port())
        try:
            await pool.acquire()
        finally:
            pool.close()

    with pytest.raises(UpstreamError, match="cannot connect"):
        asyncio.run(main())


def test_a_socket_numbered_past_select_s_limit_connects(listener: socket.socket) -> None:
    """A busy gateway holds more than FD_SETSIZE (1024) descriptors; select() cannot take a
    socket numbered past that, so the pool's check must not use it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    filler = [socket.socket() for _ in range(1100)]

    async def main() -> bool:
        pool = pool_for(listener.getsockname()[1])
        stream, _ = await pool.acquire()
        try:
            stream.write(b"x")  # connected: the write goes out
            return stream.socket.fileno() > 1024
        finally:
            stream.close()
            pool.close()

    try:
        assert asyncio.run(main()), "the test did not reach a socket number past 1024"
    finally:
        for sock in filler:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
