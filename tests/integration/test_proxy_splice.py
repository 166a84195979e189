"""The zero-copy relay: a plain TCP origin's Content-Length body goes origin socket → pipe →
client socket by splice(2), and still obeys everything the copying relay obeys: exact bytes,
both timers, the rate limit, client aborts, a short origin body, and no descriptor or pipe left
behind. Every test counts the splice calls, so it fails if the body took the copying path."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from mediaproxy.streaming.zerocopy import SPLICE_AVAILABLE, ZERO_COPY_MIN_BYTES
from testbed.origin import OriginThread, pattern

from .support import GatewayThread, request

pytestmark = pytest.mark.skipif(not SPLICE_AVAILABLE, reason="splice(2) is Linux-only")


@pytest.fixture
def splices(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The byte counts the gateway asked splice(2) for, in order."""
    calls: list[int] = []
    real_splice: Callable[..., int] = os.splice

    def counting_splice(src: int, dst: int, count: int, *args: object, **kwargs: object) -> int:
        calls.append(count)
        return real_splice(src, dst, count, *args, **kwargs)

    monkeypatch.setattr(os, "splice", counting_splice)
    yield calls


@pytest.fixture
def gateway(make_gateway, origin: OriginThread) -> GatewayThread:  # type: ignore[no-untyped-def]
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/o"
        integration = "http_proxy"
        upstream = "{origin.url}"
        idle_timeout = 1
        max_stream_duration = 3
        [[routes]]
        # The thousand streams' own: on a loaded machine an origin head can take longer than
        # a second to arrive, and a 504 would end a stream that was meant to be aborted.
        prefix = "/patient"
        integration = "http_proxy"
        upstream = "{origin.url}"
        idle_timeout = 20
        [[routes]]
        prefix = "/paced"
        integration = "http_proxy"
        upstream = "{origin.url}"
        rate_limit_bytes_per_s = 1000000
        rate_limit_after_bytes = 200000
        [[routes]]
        prefix = "/gz"
        integration = "http_proxy"
        upstream = "{origin.url}"
        compress = true
    """)
    return gateway


def read_until_closed(
    port: int, path: str, *, stop_after: int | None = None, receive_buffer: int | None = None
) -> bytes:
    """What the gateway sends for one GET until it closes (or ``stop_after`` bytes arrived)."""
    with socket.socket() as sock:
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while data := sock.recv(65536):
            received += data
            if stop_after is not None and len(received) >= stop_after:
                break
    return received


def body_of(received: bytes) -> tuple[bytes, bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize(
    "size, origin_chunk",
    [
        (4 * ZERO_COPY_MIN_BYTES, 65536),
        (1_000_003, 4096),  # many small origin writes: pieces, pipe and Tornado's buffer interleave
        (8 * 1024 * 1024 + 1, 262144),
    ],
)
def test_spliced_bodies_arrive_byte_for_byte(
    gateway: GatewayThread, splices: list[int], size: int, origin_chunk: int
) -> None:
    reply = request(gateway.port, "GET", f"/o/bytes?n={size}&chunk={origin_chunk}")
    assert reply.status == 200 and reply.headers["content-length"] == str(size)
    assert reply.body == pattern(0, size)
    assert splices, "the body was copied, not spliced"


def test_a_range_from_the_origin_is_spliced_whole(
    gateway: GatewayThread, splices: list[int]
) -> None:
    reply = request(gateway.port, "GET", "/o/bytes?n=3000000", {"Range": "bytes=100000-"})
    assert reply.status == 206 and reply.body == pattern(100_000, 2_900_000)
    assert splices


def test_a_slow_reader_gets_every_byte_in_order(gateway: GatewayThread, splices: list[int]) -> None:
    """A client whose socket is full most of the time: the waits go through Tornado."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(
            b"GET /o/bytes?n=600000&chunk=7000 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
        received = b""
        while data := sock.recv(8192):
            received += data
            time.sleep(0.0005)
    head, body = body_of(received)
    assert head.startswith(b"HTTP/1.1 200") and body == pattern(0, 600_000)
    assert splices


@pytest.mark.parametrize(
    "path",
    [
        "/o/bytes?n=300000&framing=chunked",
        "/o/bytes?n=300000&framing=close",
        "/o/bytes?n=1000",
        "/gz/bytes?n=300000&type=text/plain",
    ],
)
def test_everything_else_is_copied(gateway: GatewayThread, splices: list[int], path: str) -> None:
    """Chunked, close-delimited, small and compressed bodies keep the copying path."""
    reply = request(gateway.port, "GET", path, {"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert not splices


def test_head_is_not_spliced(gateway: GatewayThread, splices: list[int]) -> None:
    reply = request(gateway.port, "HEAD", "/o/bytes?n=300000")
    assert reply.status == 200 and reply.headers["content-length"] == "300000"
    assert reply.body == b"" and not splices


def test_the_connection_is_reused_after_a_spliced_body(
    gateway: GatewayThread, origin: OriginThread, splices: list[int]
) -> None:
    accepted = origin.accepted
    for _ in range(3):
        assert request(gateway.port, "GET", "/o/bytes?n=500000").body == pattern(0, 500_000)
    assert origin.accepted == accepted + 1
    assert splices


def test_a_short_origin_body_cuts_the_client(
    gateway: GatewayThread, origin: OriginThread, splices: list[int]
) -> None:
    head, body = body_of(read_until_closed(gateway.port, "/o/die?n=1000000&after=300000"))
    assert b"Content-Length: 1000000" in head
    assert body == pattern(0, 300_000)  # everything that came, then the cut
    assert splices
    origin.wait_for_open(0)


def test_the_idle_timer_cuts_a_stalled_spliced_body(
    gateway: GatewayThread, origin: OriginThread, splices: list[int]
) -> None:
    started = time.monotonic()
    head, body = body_of(read_until_closed(gateway.port, "/o/stall?after=200000"))
    assert b"Content-Length: 200001" in head and body == pattern(0, 200_000)
    assert 0.9 < time.monotonic() - started < 5
    assert splices
    origin.wait_for_open(0)


def test_max_stream_duration_cuts_a_spliced_body(
    gateway: GatewayThread, origin: OriginThread, splices: list[int]
) -> None:
    """Bytes keep moving (the idle timer never fires): only the total cap ends it."""
    started = time.monotonic()
    _, body = body_of(
        read_until_closed(gateway.port, "/o/bytes?n=100000000&chunk=65536&interval=0.05")
    )
    assert 2.9 < time.monotonic() - started < 8
    assert 0 < len(body) < 100_000_000 and body == pattern(0, len(body))
    assert splices
    origin.wait_for_open(0)


def test_the_rate_limit_paces_a_spliced_body(gateway: GatewayThread, splices: list[int]) -> None:
    started = time.monotonic()
    reply = request(gateway.port, "GET", "/paced/bytes?n=1200000")
    elapsed_s = time.monotonic() - started
    assert reply.body == pattern(0, 1_200_000)
    # 200,000 bytes of burst, then 1,000,000 at 1 MB/s: a second at least, and not much more.
    assert 0.9 < elapsed_s < 4
    assert splices


def test_a_client_that_leaves_closes_the_origin_within_a_second(
    gateway: GatewayThread, origin: OriginThread, splices: list[int]
) -> None:
    received = read_until_closed(
        gateway.port, "/o/bytes?n=100000000&chunk=65536&interval=0.01", stop_after=300_000
    )
    assert body_of(received)[1] == pattern(0, len(body_of(received)[1]))
    assert origin.wait_for_open(0) < 1.0
    assert splices


def open_descriptors() -> tuple[int, int]:
    """This process's open descriptors, and how many of them are pipes."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except FileNotFoundError:
            pass  # the directory's own descriptor, closed by now
    return len(targets), sum(target.startswith("pipe:") for target in targets)


async def abort_one(port: int, path: str, after_bytes: int) -> str:
    """How the stream went: "aborted" once ``after_bytes`` arrived, else what happened."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
        while len(received) < after_bytes:
            # Generous: on a loaded machine a burst of new streams can wait long for a core.
            if not (data := await asyncio.wait_for(reader.read(65536), 30)):
                return f"closed after {len(received)} bytes: {received[:40]!r}"
            received += data
        return "aborted"
    except TimeoutError:
        return f"nothing for 30 s after {len(received)} bytes: {received[:40]!r}"
    finally:
        writer.transport.abort()  # a reset, mid-body


async def abort_many(port: int, count: int, concurrency: int) -> list[str]:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> str:
        async with slots:
            return await abort_one(port, "/patient/bytes?n=100000000", 150_000)  # never whole

    return await asyncio.gather(*(one() for _ in range(count)))


@pytest.mark.slow
def test_a_thousand_aborted_spliced_streams_leave_no_descriptor_or_pipe(
    gateway: GatewayThread, origin: OriginThread, splices: list[int]
) -> None:
    asyncio.run(abort_many(gateway.port, 20, 20))  # what lives for the whole process
    deadline = time.monotonic() + 10
    while (gateway.active_streams() or origin.open_connections) and time.monotonic() < deadline:
        time.sleep(0.02)
    fds_before, pipes_before = open_descriptors()
    splices.clear()

    outcomes = asyncio.run(abort_many(gateway.port, 1000, 25))

    assert [outcome for outcome in outcomes if outcome != "aborted"] == []
    assert len(splices) >= 1000
    deadline = time.monotonic() + 10
    while (gateway.active_streams() or origin.open_connections) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.active_streams() == 0 and origin.open_connections == 0
    fds_after, pipes_after = open_descriptors()
    assert pipes_after == pipes_before
    assert fds_after <= fds_before
