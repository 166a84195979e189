"""The client side's HTTP/1.1 on the wire (``server/http1.py``): pipelining with bodies,
keep-alive for HTTP/1.0 and 1.1, 100-continue, chunked request bodies and their refusals,
the response's framing. Raw sockets against a gateway in front of the real origin."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from testbed.origin import OriginThread

from .support import GatewayThread, connect


@pytest.fixture
def gateway(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread
) -> Iterator[GatewayThread]:
    yield make_gateway(f"""
        [[routes]]
        prefix = "/o"
        integration = "http_proxy"
        upstream = "{origin.url}"
    """)


class Reader:
    """Responses read off one connection, as a client that knows HTTP/1.1 framing would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self.buffer += data
        return bool(data)

    def head(self) -> tuple[bytes, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"closed after {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return status.encode(), fields

    def response(self, head_request: bool = False) -> tuple[bytes, dict[str, str], bytes]:
        status, fields = self.head()
        if head_request or status.split()[1] in (b"204", b"304"):
            return status, fields, b""
        if fields.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buffer:
                    assert self._fill()
                size_line, _, self.buffer = self.buffer.partition(b"\r\n")
                size = int(size_line, 16)
                while len(self.buffer) < size + 2:
                    assert self._fill()
                body += self.buffer[:size]
                assert self.buffer[size : size + 2] == b"\r\n"
                self.buffer = self.buffer[size + 2 :]
                if size == 0:
                    return status, fields, body
        if "content-length" in fields:
            length = int(fields["content-length"])
            while len(self.buffer) < length:
                assert self._fill()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            return status, fields, body
        while self._fill():
            pass
        body, self.buffer = self.buffer, b""
        return status, fields, body

    def closed(self) -> bool:
        return self.buffer == b"" and not self._fill()


def assert_400_then_closed(sock: socket.socket) -> None:
    reader = Reader(sock)
    status, fields, body = reader.response()
    assert status.startswith(b"HTTP/1.1 400") and body == b"400 Bad Request\n"
    assert fields["connection"] == "close"
    sock.shutdown(socket.SHUT_WR)  # as a client told "close" does: the lingering read ends
    assert reader.closed()


def test_pipelined_requests_with_bodies_are_answered_in_order(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /o/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /o/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
            b"GET /o/bytes?n=10 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = Reader(sock)
        first, second, third = reader.response(), reader.response(), reader.response()
        assert json.loads(first[2])["bytes"] == 5
        assert json.loads(second[2])["bytes"] == 7
        assert third[0].startswith(b"HTTP/1.1 200") and len(third[2]) == 10
        sock.sendall(b"GET /o/bytes?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")  # still open
        assert len(reader.response()[2]) == 3


# The refusals below ask for a path no route serves: its handler reads the whole body before it
# answers 404, so a body that cannot be read is what decides the status, and nothing reaches
# an origin.


def test_a_well_framed_body_for_no_route_is_a_404(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        status, _, _ = Reader(sock).response()
        assert status.startswith(b"HTTP/1.1 404")


@pytest.mark.parametrize(
    "size_line",
    [b"0x3", b"+3", b" 3", b"3 ", b"3;ext=1", b"\xef\xbc\x93", b"", b"g", b"1" * 17],
)
def test_a_chunk_size_that_is_not_hexdig_is_a_400(gateway: GatewayThread, size_line: bytes) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + size_line
            + b"\r\nabc\r\n0\r\n\r\n"
        )
        assert_400_then_closed(sock)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5, 6\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: \xd9\xa5\r\n",  # an Arabic-Indic five, in UTF-8
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
    ],
)
def test_a_body_of_undecidable_length_is_a_400_and_a_close(
    gateway: GatewayThread, framing: bytes
) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\nhello")
        assert_400_then_closed(sock)


def test_a_400_closes_after_a_lingering_read_not_with_a_reset(gateway: GatewayThread) -> None:
    """RFC 9112 §9.6: closed with the client's bytes unread, the connection would be reset, and
    a reset can discard the 400 before the client has read it (here the kernel keeps it)."""
    with connect(gateway) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n")
        time.sleep(0.3)  # answered: the rest of the body comes after the 400
        sock.sendall(b"x" * 65536)
        time.sleep(0.3)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while data := sock.recv(65536):  # a reset raises ConnectionResetError
            received += data
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nConnection: close\r\n" in received
    assert received.endswith(b"\r\n\r\n400 Bad Request\n")


def test_an_obs_fold_is_a_400(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")
        status, _ = Reader(sock).head()
        assert status.startswith(b"HTTP/1.1 400")


def test_repeats_of_one_content_length_are_that_length(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"POST /o/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello")
        assert json.loads(Reader(sock).response()[2])["bytes"] == 5


def test_http_1_0_closes_unless_asked_to_keep_alive(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /o/bytes?n=3 HTTP/1.0\r\n\r\n")
        reader = Reader(sock)
        status, fields, body = reader.response()
        assert status == b"HTTP/1.1 200 OK" and len(body) == 3
        assert "connection" not in fields
        assert reader.closed()
    with connect(gateway) as sock:
        sock.sendall(b"GET /o/bytes?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reader = Reader(sock)
        status, fields, body = reader.response()
        assert fields["connection"] == "Keep-Alive" and len(body) == 3
        sock.sendall(b"GET /o/bytes?n=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert len(reader.response()[2]) == 4


def test_connection_close_is_answered_in_kind_then_closed(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /o/bytes?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reader = Reader(sock)
        _, fields, body = reader.response()
        assert fields["connection"] == "close" and len(body) == 3
        assert reader.closed()


def test_100_continue_comes_before_the_body_is_read(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"PUT /o/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        reader = Reader(sock)
        status, _ = reader.head()
        assert status == b"HTTP/1.1 100 (Continue)"
        sock.sendall(b"hello")
        status, _, body = reader.response()
        assert status.startswith(b"HTTP/1.1 200") and json.loads(body)["bytes"] == 5


def test_bodies_are_framed_as_the_response_allows(gateway: GatewayThread) -> None:
    with connect(gateway) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /o/bytes?n=100000&framing=chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        _, fields, body = reader.response()
        assert fields["transfer-encoding"] == "chunked" and len(body) == 100_000
        sock.sendall(b"HEAD /o/bytes?n=100000&framing=chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        _, fields, body = reader.response(head_request=True)
        assert "transfer-encoding" not in fields and body == b""
        sock.sendall(b"GET /o/status?code=204 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, fields, _ = reader.response()
        assert status.startswith(b"HTTP/1.1 204")
        assert "transfer-encoding" not in fields and "content-length" not in fields
        sock.sendall(b"GET /o/bytes?n=7 HTTP/1.1\r\nHost: x\r\n\r\n")  # in step after all that
        _, fields, body = reader.response()
        assert fields["content-length"] == "7" and len(body) == 7
    with connect(gateway) as sock:  # an HTTP/1.0 client cannot read chunks: close-delimited
        sock.sendall(b"GET /o/bytes?n=100000&framing=chunked HTTP/1.0\r\n\r\n")
        reader = Reader(sock)
        _, fields, body = reader.response()
        assert "transfer-encoding" not in fields and len(body) == 100_000
