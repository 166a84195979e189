"""An origin's body framing is checked before the client sees a byte of its response.

RFC 9112 §6.3: a response received by a proxy with an invalid Content-Length: "the proxy MUST
close the connection to the server, discard the received response, and send a 502 (Bad
Gateway) response to the client". The client's own connection stays in step: a 502 with a
status line, then the next response on the same kept-alive connection as usual.
"""

from __future__ import annotations

import http.client
import logging

import pytest

from testbed.origin import OriginThread, pattern

from .support import GatewayThread

# Each is the query string of /length: one "cl" per Content-Length line, as the origin sends it.
INVALID = {
    "letters": "cl=abc",
    "plus sign": "cl=%2B5",
    "minus sign": "cl=-1",
    "superscript two (passes str.isdigit)": "cl=%B2",
    "underscore (passes int)": "cl=1_0",
    "empty": "cl=",
    "inner space": "cl=1%202",
    "unequal lines": "cl=5&cl=6",
    "unequal list": "cl=5,%206",
    "empty list member": "cl=5,,5",
    "too large for any file": "cl=" + "9" * 30,
}
VALID = {
    "one value": "cl=5",
    "equal lines": "cl=5&cl=5",
    "equal list": "cl=5,%205",
}


@pytest.fixture
def gateway(make_gateway, origin: OriginThread) -> GatewayThread:  # type: ignore[no-untyped-def]
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/stream"
        integration = "http_proxy"
        upstream = "{origin.url}"
        idle_timeout = 5
        [[routes]]
        prefix = "/buffered"
        integration = "http_proxy"
        upstream = "{origin.url}"
        transfer_mode = "buffered"
        idle_timeout = 5
    """)
    return gateway


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    connection.request("GET", path)
    reply = connection.getresponse()
    return reply.status, reply.read()


def assert_nothing_uncaught(caplog: pytest.LogCaptureFixture) -> None:
    uncaught = [
        record.getMessage()
        for record in caplog.records
        if record.exc_info or record.levelno >= logging.ERROR
    ]
    assert uncaught == []


@pytest.mark.parametrize("mode", ["stream", "buffered"])
@pytest.mark.parametrize("query", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_content_length_is_a_502_and_the_connection_stays_in_step(
    gateway: GatewayThread,
    origin: OriginThread,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    query: str,
) -> None:
    caplog.set_level(logging.INFO)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        status, body = get(connection, f"/{mode}/length?{query}")
        assert (status, body) == (502, b"502 Bad Gateway\n")
        assert get(connection, f"/{mode}/bytes?n=1000") == (200, pattern(0, 1000))
    finally:
        connection.close()
    # The upstream connection that carried the bad framing was closed, never reused.
    origin.wait_for_open(1)
    assert origin.accepted == 2
    assert_nothing_uncaught(caplog)


@pytest.mark.parametrize("mode", ["stream", "buffered"])
@pytest.mark.parametrize("query", VALID.values(), ids=VALID.keys())
def test_repeats_of_one_content_length_are_one_length(
    gateway: GatewayThread, caplog: pytest.LogCaptureFixture, mode: str, query: str
) -> None:
    caplog.set_level(logging.INFO)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.request("GET", f"/{mode}/length?{query}")
        reply = connection.getresponse()
        assert (reply.status, reply.read()) == (200, b"hello")
        assert reply.getheader("Content-Length") == "5"
        assert get(connection, f"/{mode}/bytes?n=1000") == (200, pattern(0, 1000))
    finally:
        connection.close()
    assert_nothing_uncaught(caplog)


@pytest.mark.parametrize("mode", ["stream", "buffered"])
def test_a_head_response_with_an_invalid_content_length_is_a_502(
    gateway: GatewayThread, mode: str
) -> None:
    """No body follows, but the length would be passed on as the truth."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.request("HEAD", f"/{mode}/length?cl=%2B5")
        reply = connection.getresponse()
        assert reply.status == 502
        reply.read()
        assert get(connection, f"/{mode}/bytes?n=1000") == (200, pattern(0, 1000))
    finally:
        connection.close()
