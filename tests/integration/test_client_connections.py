"""Client connections before a request exists: header size (431, 414), header_timeout apart
from idle_timeout, max_client_connections, and the status page's event streams as streams.
Small real timeouts (0.3-1 s), raw sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .support import GatewayThread, connect, request


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    return tmp_path


def file_gateway(
    make_gateway: Callable[[str], GatewayThread], root: Path, server: str = "", limits: str = ""
) -> GatewayThread:
    return make_gateway(f"""
        [server]
        {server}
        [limits]
        {limits}
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{root}"
    """)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the gateway closes (a reset after its answer counts as closing)."""
    received = b""
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    return received


def read_responses(sock: socket.socket, count: int = 1) -> list[bytes]:
    """``count`` responses with Content-Length bodies, on a connection that stays open."""
    received = b""
    responses: list[bytes] = []
    while len(responses) < count:
        head_end = received.find(b"\r\n\r\n")
        if head_end >= 0:
            head = received[:head_end]
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(received) >= head_end + 4 + length:
                responses.append(received[: head_end + 4 + length])
                received = received[head_end + 4 + length :]
                continue
        data = sock.recv(65536)
        assert data, f"closed after {received!r}"
        received += data
    assert received == b"", "more than asked for"
    return responses


def read_response(sock: socket.socket) -> bytes:
    return read_responses(sock)[0]


def is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


GET = b"GET /files/hello.txt HTTP/1.1\r\nHost: x\r\n"


# --- 400 ---------------------------------------------------------------------------------------


def test_a_body_that_turns_malformed_after_the_response_began_cuts_the_response(
    make_gateway: Callable[[str], GatewayThread], root: Path
) -> None:
    """A 400 cannot follow a status line already sent: the response is cut instead."""
    size = 8 * 1024 * 1024
    (root / "big.bin").write_bytes(bytes(size))
    gateway = file_gateway(make_gateway, root)
    with connect(gateway) as sock:
        sock.sendall(
            b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"zz\r\n")  # not a chunk size
        time.sleep(0.3)
        answer += read_all(sock)
    assert b"400 Bad Request" not in answer
    assert len(answer) < size


# --- 431 and 414 --------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_bytes", [5000, 70_000])
def test_a_header_block_over_the_limit_is_431_then_closed(
    make_gateway: Callable[[str], GatewayThread], root: Path, pad_bytes: int
) -> None:
    gateway = file_gateway(make_gateway, root, "max_header_bytes = 4096")
    with connect(gateway) as sock:
        sock.sendall(GET + b"X-Pad: " + b"a" * pad_bytes + b"\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\n431 Request Header Fields Too Large\n")


def test_the_default_limit_is_64_kib(
    make_gateway: Callable[[str], GatewayThread], root: Path
) -> None:
    gateway = file_gateway(make_gateway, root)
    with connect(gateway) as sock:
        sock.sendall(GET + b"X-Pad: " + b"a" * 60_000 + b"\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 OK\r\n")
    with connect(gateway) as sock:
        sock.sendall(GET + b"X-Pad: " + b"a" * 66_000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("target_bytes", [5000, 70_000])
def test_a_request_line_over_the_limit_is_414_then_closed(
    make_gateway: Callable[[str], GatewayThread], root: Path, target_bytes: int
) -> None:
    gateway = file_gateway(make_gateway, root, "max_header_bytes = 4096")
    with connect(gateway) as sock:
        sock.sendall(b"GET /files/" + b"a" * target_bytes + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert answer.endswith(b"\r\n\r\n414 URI Too Long\n")


def test_a_header_just_within_the_limit_is_served_on_a_kept_alive_connection(
    make_gateway: Callable[[str], GatewayThread], root: Path
) -> None:
    gateway = file_gateway(make_gateway, root, "max_header_bytes = 4096")
    head = GET + b"X-Pad: "
    padded = head + b"a" * (4096 - len(head) - 4) + b"\r\n\r\n"
    assert len(padded) == 4096
    with connect(gateway) as sock:
        for _ in range(2):  # pipelined: the second arrives with the first
            sock.sendall(padded + padded)
            for answer in read_responses(sock, 2):
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


# --- header_timeout and idle_timeout --------------------------------------------------------------


def test_a_header_that_trickles_in_is_cut_at_header_timeout(
    make_gateway: Callable[[str], GatewayThread], root: Path
) -> None:
    gateway = file_gateway(make_gateway, root, "header_timeout = 0.5", "idle_timeout = 30")
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /files/hello.txt HTTP/1.1\r\n")
        for _ in range(30):  # a byte every 0.1 s: never idle, never complete
            time.sleep(0.1)
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
        assert is_closed(sock)
        assert 0.4 < time.monotonic() - started < 2.5


def test_a_silent_new_connection_is_closed_at_header_timeout(
    make_gateway: Callable[[str], GatewayThread], root: Path
) -> None:
    gateway = file_gateway(make_gateway, root, "header_timeout = 0.5", "idle_timeout = 30")
    with connect(gateway) as sock:
        started = time.monotonic()
        assert is_closed(sock)
        assert 0.4 < time.monotonic() - started < 2.5


def test_a_kept_alive_connection_waits_idle_timeout_then_header_timeout(
    make_gateway: Callable[[str], GatewayThread], root: Path
) -> None:
    gateway = file_gateway(make_gateway, root, "header_timeout = 0.3", "idle_timeout = 1")
    with connect(gateway) as sock:
        sock.sendall(GET + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        time.sleep(0.6)  # idle longer than header_timeout, within idle_timeout: still open
        sock.sendall(GET + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        # The next request begins but never completes: header_timeout, not idle_timeout.
        sock.sendall(b"GET /files/hello.txt HTTP/1.1\r\n")
        started = time.monotonic()
        assert is_closed(sock)
        assert 0.2 < time.monotonic() - started < 0.9
    with connect(gateway) as sock:
        sock.sendall(GET + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        started = time.monotonic()
        assert is_closed(sock)  # nothing more: idle_timeout
        assert 0.9 < time.monotonic() - started < 3


# --- max_client_connections -----------------------------------------------------------------------


def test_connections_past_max_client_connections_are_closed_at_once(
    make_gateway: Callable[[str], GatewayThread], root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = file_gateway(make_gateway, root, "max_client_connections = 2")
    first, second = connect(gateway), connect(gateway)
    try:
        first.sendall(GET + b"\r\n")
        assert read_response(first).startswith(b"HTTP/1.1 200 OK\r\n")
        for _ in range(3):
            with connect(gateway) as refused:
                started = time.monotonic()
                assert is_closed(refused)
                assert time.monotonic() - started < 1
        second.sendall(GET + b"\r\n")  # the two admitted ones carry on
        assert read_response(second).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        first.close()
        second.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # their places come back once they are closed
        try:
            if request(gateway.port, "GET", "/files/hello.txt", timeout=2).status == 200:
                break
        except ConnectionError:
            time.sleep(0.05)
    else:
        pytest.fail("no connection accepted after the others closed")
    warnings = [r for r in caplog.records if "max_client_connections" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not per connection


# --- the status page's event streams --------------------------------------------------------------


def test_event_streams_take_a_stream_slot(
    make_gateway: Callable[[str], GatewayThread], root: Path
) -> None:
    gateway = file_gateway(make_gateway, root, limits="max_concurrent_streams = 1")
    with connect(gateway) as events:
        events.sendall(b"GET /_mediaproxy/events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert events.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        second = request(gateway.port, "GET", "/_mediaproxy/events", timeout=5)
        assert (second.status, second.headers["retry-after"]) == (503, "5")
        assert request(gateway.port, "GET", "/files/hello.txt").status == 503
    deadline = time.monotonic() + 5  # the client left: the stream notices within a second
    while request(gateway.port, "GET", "/files/hello.txt").status != 200:
        assert time.monotonic() < deadline, "the event stream kept its slot"
        time.sleep(0.1)
