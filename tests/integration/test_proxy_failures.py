"""How the http_proxy integration fails: a clear status before the headers, a cut after them,
and the upstream connection closed either way. Small real timeouts (1-2 s), a real origin."""

from __future__ import annotations

import http.client
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from mediaproxy.integrations.http_proxy.relay import MAX_HEADER_BYTES
from testbed.origin import OriginThread, pattern

from .support import GatewayThread, closed_port, request

# A valid name too long for DNS (over 255 octets): the C library refuses it without sending a
# query, so "unresolvable" is tested without leaving loopback.
UNRESOLVABLE_HOST = "a." * 130 + "x"


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    """A port whose accept queue is full: connecting there gets no answer at all, the way a
    firewalled or vanished host behaves, without leaving loopback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            yield port


@pytest.fixture
def gateway(
    make_gateway,
    origin: OriginThread,  # type: ignore[no-untyped-def]
    unanswering_port: int,
) -> GatewayThread:
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/o"
        integration = "http_proxy"
        upstream = "{origin.url}"
        idle_timeout = 1
        max_stream_duration = 2
        [[routes]]
        prefix = "/refused"
        integration = "http_proxy"
        upstream = "http://127.0.0.1:{closed_port()}/"
        [[routes]]
        prefix = "/unresolvable"
        integration = "http_proxy"
        upstream = "http://{UNRESOLVABLE_HOST}/"
        [[routes]]
        prefix = "/unanswered"
        integration = "http_proxy"
        upstream = "http://127.0.0.1:{unanswering_port}/"
        connect_timeout = 0.5
    """)
    return gateway


def curl_exit_code(url: str) -> int:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/system-deps.sh test installs it)")
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "--max-time", "20", url], capture_output=True
    ).returncode


def read_until_closed(port: int, path: str) -> bytes:
    """Everything the gateway sends for one GET, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


@pytest.mark.parametrize("prefix", ["/refused", "/unresolvable"])
def test_an_origin_out_of_reach_is_a_502(gateway: GatewayThread, prefix: str) -> None:
    started = time.monotonic()
    response = request(gateway.port, "GET", f"{prefix}/x")
    assert (response.status, response.body) == (502, b"502 Bad Gateway\n")
    assert time.monotonic() - started < 5


def test_no_connection_within_the_connect_timeout_is_a_504(gateway: GatewayThread) -> None:
    started = time.monotonic()
    response = request(gateway.port, "GET", "/unanswered/x")
    assert (response.status, response.body) == (504, b"504 Gateway Timeout\n")
    assert 0.4 < time.monotonic() - started < 5


def test_a_malformed_response_is_a_502(gateway: GatewayThread, origin: OriginThread) -> None:
    response = request(gateway.port, "GET", "/o/malformed")
    assert response.status == 502
    origin.wait_for_open(0)


@pytest.mark.parametrize(
    "field_bytes, status", [(MAX_HEADER_BYTES - 1024, 200), (MAX_HEADER_BYTES + 1, 502)]
)
def test_a_response_head_over_the_header_limit_is_a_502(
    gateway: GatewayThread, origin: OriginThread, field_bytes: int, status: int
) -> None:
    response = request(gateway.port, "GET", f"/o/bigheader?bytes={field_bytes}")
    assert response.status == status
    if status == 200:
        assert (len(response.headers["x-big"]), response.body) == (field_bytes, b"ok")


def test_no_headers_within_the_idle_timeout_is_a_504(
    gateway: GatewayThread, origin: OriginThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediaproxy")
    started = time.monotonic()
    response = request(gateway.port, "GET", "/o/stall?headers=0")
    assert (response.status, response.body) == (504, b"504 Gateway Timeout\n")
    assert 0.9 < time.monotonic() - started < 5
    origin.wait_for_open(0)
    assert any(
        "route /o" in r.getMessage() and "idle_timeout" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_origin_dying_mid_body_cuts_the_client(
    gateway: GatewayThread, origin: OriginThread, framing: str
) -> None:
    path = f"/o/die?n=1000000&after=300000&framing={framing}"
    with pytest.raises(http.client.IncompleteRead):
        request(gateway.port, "GET", path)
    assert curl_exit_code(gateway.base_url + path) == 18  # "transfer closed with data remaining"
    origin.wait_for_open(0)


def test_a_body_framed_by_close_cannot_be_told_from_a_cut_one(gateway: GatewayThread) -> None:
    """The documented limit: the origin's close is the end of such a body, cut or not."""
    response = request(gateway.port, "GET", "/o/die?n=1000000&after=300000&framing=close")
    assert response.status == 200 and response.body == pattern(0, 300000)


def test_a_stall_after_the_headers_cuts_the_client(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    started = time.monotonic()
    received = read_until_closed(gateway.port, "/o/stall?after=1000")
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 1001" in head and body == pattern(0, 1000)
    assert 0.9 < time.monotonic() - started < 5
    origin.wait_for_open(0)


def test_max_stream_duration_cuts_an_endless_stream(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    started = time.monotonic()
    received = read_until_closed(gateway.port, "/o/endless")
    assert not received.endswith(b"0\r\n\r\n"), "cut, not completed"
    assert 1.9 < time.monotonic() - started < 6
    origin.wait_for_open(0)


def test_a_client_that_leaves_closes_the_upstream_within_a_second(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("GET", "/o/endless")
    connection.getresponse().read(200_000)
    assert origin.open_connections == 1
    connection.close()
    assert origin.wait_for_open(0) < 1.0


def test_a_client_that_leaves_mid_upload_closes_the_upstream(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    """Its leaving shows once the gateway has relayed what the kernel already took from it
    (the upload is flow-controlled, so that waits for the origin: here 2 MB at 20 MB/s)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /o/upload?rate=20000000 HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000000\r\n\r\n"
        )
        sock.sendall(pattern(0, 2_000_000))
        origin.wait_for_open(1)
    assert origin.wait_for_open(0) < 1.0


def test_a_client_that_stops_reading_is_cut_by_the_idle_timer(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(b"GET /o/bytes?n=1000000000 HTTP/1.1\r\nHost: gw\r\n\r\n")
        origin.wait_for_open(1)
        # Not reading: the gateway stops reading the origin, nothing moves, the timer fires.
        assert 0.5 < origin.wait_for_open(0) < 5
