"""The http_proxy integration against a real origin: what passes through, and how exactly."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from mediaproxy.integrations.http_proxy.route import HttpProxyIntegration
from testbed.origin import (
    GZIP_BODY,
    ORIGIN_DATE,
    ORIGIN_SERVER,
    OriginThread,
    pattern,
    pattern_sha256,
)

from .support import GatewayThread, Response, request, wait_until


@pytest.fixture
def gateway(make_gateway, origin: OriginThread) -> GatewayThread:  # type: ignore[no-untyped-def]
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/o"
        integration = "http_proxy"
        upstream = "{origin.url}"
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
        [[routes]]
        prefix = "/buffered"
        integration = "http_proxy"
        upstream = "{origin.url}"
        transfer_mode = "buffered"
        buffered_max_bytes = 1048576
        buffered_timeout = 1
    """)
    return gateway


def echoed(response: Response) -> dict[str, Any]:
    assert response.status == 200, response
    answer: dict[str, Any] = json.loads(response.body)
    return answer


def raw_request(port: int, head: bytes) -> bytes:
    """Send a request head byte for byte (no client library normalising it); the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        reply = b""
        while data := sock.recv(65536):
            reply += data
    return reply


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_bodies_pass_through_byte_for_byte(gateway: GatewayThread, framing: str) -> None:
    size = 3 * 1024 * 1024 + 17
    response = request(gateway.port, "GET", f"/o/bytes?n={size}&framing={framing}")
    assert response.status == 200
    assert len(response.body) == size
    assert hashlib.sha256(response.body).hexdigest() == pattern_sha256(size)
    if framing == "length":
        assert response.headers["content-length"] == str(size)
    else:  # re-framed for the client: chunked, so a cut would show
        assert response.headers["transfer-encoding"] == "chunked"


def test_path_and_query_reach_the_origin_byte_for_byte(gateway: GatewayThread) -> None:
    # Already in normal form (test_paths.py has what is normalised, refused, or passed raw).
    below = "/c;p=1/%25/caf%C3%A9/x+y?q=1&r=%20+x&&s=%2B#"
    reply = raw_request(
        gateway.port, f"GET /api{below} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
    )
    answer = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert answer["target"] == "/echo" + below


def test_a_raw_non_ascii_byte_is_percent_encoded(gateway: GatewayThread) -> None:
    reply = raw_request(
        gateway.port, b"GET /api/caf\xe9?q=\xe9 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["target"] == "/echo/caf%E9?q=%E9"


def test_the_route_itself_maps_to_the_base(gateway: GatewayThread) -> None:
    assert echoed(request(gateway.port, "GET", "/api"))["target"] == "/echo/"
    assert echoed(request(gateway.port, "GET", "/api/?x"))["target"] == "/echo/?x"


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_reaches_the_origin(gateway: GatewayThread, method: str) -> None:
    body = b"payload" if method in ("PUT", "POST", "PATCH") else None
    answer = echoed(request(gateway.port, method, "/api/thing", body=body))
    assert answer["method"] == method
    assert answer["body_bytes"] == (len(body) if body else 0)


def test_head_answers_like_get_without_a_body(gateway: GatewayThread) -> None:
    got = request(gateway.port, "GET", "/o/bytes?n=5000")
    head = request(gateway.port, "HEAD", "/o/bytes?n=5000")
    assert head.status == 200 and head.body == b""
    strip = {"date"}
    assert {k: v for k, v in head.headers.items() if k not in strip} == {
        k: v for k, v in got.headers.items() if k not in strip
    }
    chunked_head = request(gateway.port, "HEAD", "/o/bytes?n=5000&framing=chunked")
    assert "content-length" not in chunked_head.headers, "no length was known: none invented"


def test_hop_by_hop_request_fields_stay_behind(gateway: GatewayThread) -> None:
    answer = echoed(
        request(
            gateway.port,
            "GET",
            "/api/x",
            headers={
                "Connection": "X-Hop-Secret",
                "X-Hop-Secret": "1",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic eDp5",
                "Upgrade": "websocket",
                "X-End": "kept",
                "X-Forwarded-For": "10.1.2.3",
                "Via": "1.0 fred",
                "X-Forwarded-Proto": "https",
                "Range": "bytes=0-1",
                "If-None-Match": '"v1"',
            },
        )
    )
    names = [name.lower() for name, _ in answer["headers"]]
    fields = {name.lower(): value for name, value in answer["headers"]}
    for hop in (
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
        "transfer-encoding",
    ):
        assert hop not in names
    assert fields["x-end"] == "kept"
    assert fields["range"] == "bytes=0-1" and fields["if-none-match"] == '"v1"'
    assert fields["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert fields["x-forwarded-proto"] == "http"
    assert fields["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert fields["via"] == "1.0 fred, 1.1 mediaproxy"
    assert fields["host"] == gateway.config.routes[0].settings.upstream.authority
    assert len(names) == len(set(names)), "no field doubled"


def test_hop_by_hop_response_fields_stay_behind(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/o/hop")
    for hop in ("x-hop-secret", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert hop not in response.headers
    assert response.headers["x-end"] == "kept"
    assert [v for k, v in response.header_list if k.lower() == "set-cookie"] == ["a=1", "b=2"]
    assert response.headers["via"] == "1.1 origin, 1.1 mediaproxy"


def test_ranges_and_validators_reach_the_origin(gateway: GatewayThread) -> None:
    partial = request(gateway.port, "GET", "/o/bytes?n=1000", headers={"Range": "bytes=10-19"})
    assert partial.status == 206
    assert partial.headers["content-range"] == "bytes 10-19/1000"
    assert partial.body == pattern(10, 10)
    unsatisfiable = request(
        gateway.port, "GET", "/o/bytes?n=1000", headers={"Range": "bytes=5000-"}
    )
    assert unsatisfiable.status == 416
    assert unsatisfiable.headers["content-range"] == "bytes */1000"
    not_modified = request(
        gateway.port, "GET", "/o/bytes?n=1000", headers={"If-None-Match": '"bytes-1000"'}
    )
    assert not_modified.status == 304 and not_modified.body == b""
    assert not_modified.headers["etag"] == '"bytes-1000"'


def test_status_and_reason_pass_through(gateway: GatewayThread) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("GET", "/o/status?code=299&reason=Quite+Unusual")
    reply = connection.getresponse()
    assert (reply.status, reply.reason, reply.read()) == (299, "Quite Unusual", b"status 299\n")
    connection.close()


def test_content_encoding_passes_through_undecoded(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/o/gzip", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.body == GZIP_BODY


def test_no_content_type_is_added(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/o/notype")
    assert response.body == b"no type here\n"
    assert "content-type" not in response.headers


def test_the_origins_date_and_server_replace_the_gateways(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/o/notype")
    assert [v for k, v in response.header_list if k.lower() == "date"] == [ORIGIN_DATE]
    assert [v for k, v in response.header_list if k.lower() == "server"] == [ORIGIN_SERVER]


@pytest.mark.parametrize(
    "location, rewritten",
    [
        ("{origin}x/next?a=1", "{gateway}/o/x/next?a=1"),
        ("/x/next", "/o/x/next"),
        ("http://example.com/x", "http://example.com/x"),
        ("relative/path", "relative/path"),
    ],
)
def test_redirects_to_the_origin_point_at_the_gateway(
    gateway: GatewayThread, origin: OriginThread, location: str, rewritten: str
) -> None:
    to = quote(location.format(origin=origin.url), safe="")
    response = request(gateway.port, "GET", f"/o/redirect?to={to}")
    assert response.status == 302
    assert response.headers["location"] == rewritten.format(gateway=gateway.base_url)


@pytest.mark.parametrize(
    "location",
    ["/redirect//evil.example/x", "/redirect/\\evil.example", "/redirect/\t/evil.example"],
)
def test_a_rewritten_location_is_never_an_open_redirect(
    make_gateway,  # type: ignore[no-untyped-def]
    origin: OriginThread,
    location: str,
) -> None:
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/"
        integration = "http_proxy"
        upstream = "{origin.url}redirect/"
    """)
    response = request(gateway.port, "GET", f"/?to={quote(location, safe='')}")
    assert response.status == 302
    assert response.headers["location"] == "/evil.example" + location.partition("evil.example")[2]


def test_the_client_cannot_speak_for_the_gateway_in_forwarding_fields(
    gateway: GatewayThread,
) -> None:
    answer = echoed(
        request(
            gateway.port,
            "GET",
            "/api/x",
            headers={
                "Host": "gw.example",
                "X-Real-IP": "203.0.113.9",
                "Forwarded": "for=198.51.100.1;proto=https",
            },
        )
    )
    fields = [(name.lower(), value) for name, value in answer["headers"]]
    assert [value for name, value in fields if name == "x-real-ip"] == ["127.0.0.1"]
    assert [value for name, value in fields if name == "forwarded"] == [
        "for=198.51.100.1;proto=https, for=127.0.0.1;host=gw.example;proto=http"
    ]
    unterminated = echoed(
        request(
            gateway.port,
            "GET",
            "/api/x",
            headers={"Host": "gw.example", "Forwarded": 'for="198.51.100.1'},
        )
    )
    assert [value for name, value in unterminated["headers"] if name.lower() == "forwarded"] == [
        "for=127.0.0.1;host=gw.example;proto=http"
    ]


def test_public_url_replaces_the_clients_host_and_scheme(
    make_gateway,  # type: ignore[no-untyped-def]
    origin: OriginThread,
) -> None:
    gateway: GatewayThread = make_gateway(f"""
        [server]
        public_url = "https://Media.Example.com:8443/gw/"
        [[routes]]
        prefix = "/o"
        integration = "http_proxy"
        upstream = "{origin.url}"
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
    """)
    fields = dict(
        echoed(request(gateway.port, "GET", "/api/x", headers={"Host": "evil.example"}))["headers"]
    )
    assert (fields["X-Forwarded-Host"], fields["X-Forwarded-Proto"]) == (
        "media.example.com:8443",
        "https",
    )
    assert fields["Forwarded"] == 'for=127.0.0.1;host="media.example.com:8443";proto=https'
    for location, rewritten in [
        (f"{origin.url}x?a=1", "https://media.example.com:8443/gw/o/x?a=1"),
        ("/x", "/gw/o/x"),
    ]:
        response = request(
            gateway.port,
            "GET",
            f"/o/redirect?to={quote(location, safe='')}",
            headers={"Host": "evil.example"},
        )
        assert response.headers["location"] == rewritten


def pattern_pieces(size: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    for offset in range(0, size, piece):
        yield pattern(offset, min(piece, size - offset))


@pytest.mark.parametrize(
    "method, chunked",
    [
        ("PUT", False),
        ("POST", True),
        ("DELETE", True),  # Tornado frames POST; DELETE is ours
    ],
)
def test_uploads_stream_to_the_origin(gateway: GatewayThread, method: str, chunked: bool) -> None:
    size = 5 * 1024 * 1024 + 3
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    if chunked:
        connection.request(method, "/o/upload", body=pattern_pieces(size), encode_chunked=True)
    else:
        connection.request(method, "/o/upload", body=pattern(0, size))
    answer = json.loads(connection.getresponse().read())
    connection.close()
    assert answer == {"bytes": size, "sha256": pattern_sha256(size)}


def test_an_upload_to_a_slow_origin_arrives_whole(gateway: GatewayThread) -> None:
    size = 1024 * 1024
    started = time.monotonic()
    answer = echoed(request(gateway.port, "PUT", "/o/upload?rate=4000000", body=pattern(0, size)))
    assert answer == {"bytes": size, "sha256": pattern_sha256(size)}
    assert time.monotonic() - started >= 0.2  # the origin's pace, not the client's


def test_small_requests_share_one_upstream_connection(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    before = origin.accepted
    for _ in range(20):
        assert request(gateway.port, "GET", "/o/bytes?n=100").status == 200
    assert origin.accepted - before == 1


def test_interim_responses_are_skipped_and_trailers_dropped(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    before = origin.accepted
    for _ in range(3):
        response = request(gateway.port, "GET", "/o/interim")
        assert (response.status, response.body) == (200, b"after interims")
        assert "link" not in response.headers
        assert "x-sum" not in response.headers
    assert origin.accepted - before == 1  # each exchange ended in step: one connection


def test_a_connection_is_not_reused_after_an_aborted_exchange(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    assert request(gateway.port, "GET", "/o/bytes?n=100").status == 200  # now idle in the pool
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("GET", "/o/endless")  # takes the idle connection...
    connection.getresponse().read(100_000)
    connection.close()  # ...and the client leaves mid-stream
    origin.wait_for_open(0)  # closed, not returned to the pool
    before = origin.accepted
    assert request(gateway.port, "GET", "/o/bytes?n=100").status == 200
    assert origin.accepted - before == 1
    with pytest.raises(http.client.IncompleteRead):
        request(gateway.port, "GET", "/o/die?n=1000&after=10")  # reuses it, is cut...
    origin.wait_for_open(0)
    assert request(gateway.port, "GET", "/o/bytes?n=100").status == 200  # ...so a new one
    assert origin.accepted - before == 2
    assert idle_upstream_connections(gateway, "/o") == 1


@pytest.mark.parametrize(
    "method, status, origin_requests",
    [
        ("GET", 200, 3),  # the closed connection's, then the retry's on a new one
        ("POST", 502, 2),  # never sent again (RFC 9110 §9.2.2)
    ],
)
def test_only_an_idempotent_request_is_retried_after_the_origin_closed_a_pooled_connection(
    gateway: GatewayThread, origin: OriginThread, method: str, status: int, origin_requests: int
) -> None:
    assert request(gateway.port, "GET", "/o/bytes?n=100&hang_up_next=1").status == 200
    wait_until(lambda: idle_upstream_connections(gateway, "/o") == 1)
    assert request(gateway.port, method, "/o/echo").status == status
    assert origin.origin.requests == origin_requests


@pytest.mark.parametrize(
    "framing",
    [
        "Transfer-Encoding: gzip, chunked",
        "Content-Length: 10\r\nTransfer-Encoding: chunked",
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: gzip, chunked",
    ],
)
def test_a_request_framed_as_tornado_refuses_never_reaches_the_origin(
    gateway: GatewayThread, origin: OriginThread, framing: str
) -> None:
    # A pooled connection: without a connect to wait for, the request would go out at once.
    assert request(gateway.port, "GET", "/o/bytes?n=100").status == 200
    wait_until(lambda: idle_upstream_connections(gateway, "/o") == 1)
    reply = raw_request(
        gateway.port,
        f"POST /o/echo HTTP/1.1\r\nHost: gw\r\n{framing}\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 400 ")
    # A request after it reaches the origin after anything the gateway sent for it.
    assert request(gateway.port, "GET", "/o/bytes?n=100").status == 200
    assert origin.origin.requests == 2


def idle_upstream_connections(gateway: GatewayThread, prefix: str) -> int:
    assert gateway.running is not None
    (proxy,) = [i for i in gateway.running.gateway.integrations if i.route.prefix == prefix]
    assert isinstance(proxy, HttpProxyIntegration)
    return int(gateway.call(lambda: proxy.pool.idle_count))  # type: ignore[call-overload]


def test_buffered_mode_sends_a_content_length(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/buffered/bytes?n=300000&framing=chunked")
    assert response.headers["content-length"] == "300000"
    assert response.body == pattern(0, 300000)
    head = request(gateway.port, "HEAD", "/buffered/bytes?n=300000")
    assert head.headers["content-length"] == "300000" and head.body == b""


def test_buffered_mode_refuses_a_response_over_its_ceiling(gateway: GatewayThread) -> None:
    for framing in ("length", "chunked"):
        response = request(gateway.port, "GET", f"/buffered/bytes?n=2000000&framing={framing}")
        assert response.status == 502
        assert b"buffered_max_bytes" in response.body


def test_buffered_mode_gives_up_after_its_timeout(gateway: GatewayThread) -> None:
    started = time.monotonic()
    response = request(gateway.port, "GET", "/buffered/bytes?n=100&chunk=10&interval=0.2")
    assert response.status == 504
    assert 0.9 < time.monotonic() - started < 5


def test_streaming_sends_the_first_byte_long_before_the_last(gateway: GatewayThread) -> None:
    """A slow origin (a chunk every 0.1 s): streamed, the client has bytes at once;
    buffered, it has nothing until the origin is done."""
    for prefix, chunks, streams in (("/o", 12, True), ("/buffered", 8, False)):
        path = f"/bytes?n={chunks * 1000}&chunk=1000&interval=0.1"
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        connection.request("GET", prefix + path)
        reply = connection.getresponse()
        reply.read(1)
        first_byte_s = time.monotonic() - started
        reply.read()
        last_byte_s = time.monotonic() - started
        connection.close()
        if streams:
            assert first_byte_s < 0.4 and last_byte_s > 1.0, (first_byte_s, last_byte_s)
        else:
            assert first_byte_s > 0.6, first_byte_s


def test_an_origin_given_by_address_is_connected_without_a_lookup(
    gateway: GatewayThread, origin: OriginThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup runs on a thread pool: for an address it only adds a thread hop to every new
    origin connection, i.e. to the first byte of every response not served from the pool."""
    lookups: list[object] = []
    real_getaddrinfo = socket.getaddrinfo

    def counting_getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> object:
        lookups.append(port)
        return real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", counting_getaddrinfo)
    reply = request(gateway.port, "GET", "/o/bytes?n=10")
    assert reply.status == 200 and reply.body == pattern(0, 10)
    assert origin.port not in lookups
