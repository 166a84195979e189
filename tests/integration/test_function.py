"""The function integration over real sockets: Lambda-style handlers, streams, the examples."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mediaproxy import config as config_module

from . import function_handlers as handlers
from .support import GatewayThread, read_cut_response, request, wait_for_no_streams

REPO = Path(__file__).resolve().parents[2]
HANDLERS = [
    "echo",
    "binary",
    "iterator_body",
    "async_iterator_body",
    "async_stream",
    "sync_stream",
    "fails_at_once",
    "fails_later",
    "not_a_response",
    "bad_header",
    "status_with_body",
    "status_with_streamed_body",
    "head_case",
]


@pytest.fixture
def gateway(make_gateway) -> GatewayThread:  # type: ignore[no-untyped-def]
    routes = "".join(
        f"""
        [[routes]]
        prefix = "/{name}"
        integration = "function"
        handler = "tests.integration.function_handlers:{name}"
    """
        for name in HANDLERS
    )
    gateway: GatewayThread = make_gateway(routes)
    return gateway


@pytest.fixture(scope="module")
def default_gateway() -> Iterator[GatewayThread]:
    """The shipped conf/mediaproxy.toml, examples and all, on a free port."""
    loaded = config_module.load(REPO / "conf" / "mediaproxy.toml")
    gateway = GatewayThread(replace(loaded, server=replace(loaded.server, port=0)))
    yield gateway
    gateway.stop()


def test_the_event_and_context_a_lambda_handler_gets(gateway: GatewayThread) -> None:
    reply = request(
        gateway.port,
        "POST",
        "/echo/a%20b/c?x=1&x=2&y=%C3%A9",
        {"X-Custom": "v", "Content-Type": "application/json"},
        body=b'{"k": 1}',
    )
    assert reply.status == 201
    assert reply.headers["content-length"] == str(len(reply.body))
    assert [v for k, v in reply.header_list if k == "X-Many"] == ["a", "b"]
    answer = json.loads(reply.body)
    event = answer["event"]
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/echo/a b/c"
    assert event["resource"] == "/echo/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a b/c"}
    assert event["queryStringParameters"] == {"x": "2", "y": "é"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["é"]}
    assert event["headers"]["X-Custom"] == "v"
    assert event["multiValueHeaders"]["X-Custom"] == ["v"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"k": 1}', False)
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["httpMethod"] == "POST"
    assert answer["function_name"] == "tests.integration.function_handlers:echo"
    assert 0 < answer["remaining_ms"] <= 900_000


def test_a_binary_request_body_arrives_base64(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "PUT", "/echo", body=handlers.BINARY)
    event = json.loads(reply.body)["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == handlers.BINARY
    assert event["queryStringParameters"] is None


def test_head_gets_the_get_headers_without_the_body(gateway: GatewayThread) -> None:
    head = request(gateway.port, "HEAD", "/binary")
    got = request(gateway.port, "GET", "/binary")
    assert head.body == b"" and head.status == got.status == 200
    assert (
        head.headers["content-length"] == got.headers["content-length"] == str(len(handlers.BINARY))
    )


def test_binary_passes_through_untouched_and_uncompressed(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/binary", {"Accept-Encoding": "gzip"})
    assert reply.body == handlers.BINARY
    assert reply.headers["content-type"] == "application/octet-stream"
    assert "content-encoding" not in reply.headers
    streamed = request(gateway.port, "GET", "/async_iterator_body", {"Accept-Encoding": "gzip"})
    assert streamed.body == handlers.BINARY[:300]
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert "content-encoding" not in streamed.headers


def test_an_iterator_body_is_streamed_with_a_sniffed_type(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/iterator_body")
    assert reply.body == b"one two three"
    assert reply.headers["content-type"].startswith("text/plain")
    assert reply.headers["transfer-encoding"] == "chunked"


def test_an_exception_before_the_first_byte_is_502_without_the_traceback(
    gateway: GatewayThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="mediaproxy.function"):
        reply = request(gateway.port, "GET", "/fails_at_once")
    assert (reply.status, reply.body) == (502, b"502 Bad Gateway\n")
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_an_exception_mid_stream_aborts_the_response(gateway: GatewayThread) -> None:
    assert read_cut_response(gateway.port, "/fails_later") == b"a first chunk\n"


@pytest.mark.parametrize("path", ["/not_a_response", "/bad_header"])
def test_a_malformed_response_is_502(gateway: GatewayThread, path: str) -> None:
    reply = request(gateway.port, "GET", path)
    assert (reply.status, reply.body) == (502, b"502 Bad Gateway: malformed function response\n")


@pytest.mark.parametrize("case", handlers.MALFORMED_HEADS)
def test_a_head_outside_the_field_grammar_is_502(gateway: GatewayThread, case: str) -> None:
    """RFC 9110 §5.5 field-values (no control characters but HTAB, Latin-1 at most), token
    names, a statusCode of ASCII digits, the header block within its cap."""
    reply = request(gateway.port, "GET", f"/head_case?case={case}")
    assert (reply.status, reply.body) == (502, b"502 Bad Gateway: malformed function response\n")


@pytest.mark.parametrize(
    "case, status, value",
    [
        ("string-status", 201, None),
        ("tab-inside", 200, "a\tb"),
        ("latin-1", 200, "caf\u00e9"),
        ("surrounding-space", 200, "trimmed"),
        ("empty-value", 200, ""),
    ],
)
def test_a_head_within_the_field_grammar_passes(
    gateway: GatewayThread, case: str, status: int, value: str | None
) -> None:
    reply = request(gateway.port, "GET", f"/head_case?case={case}")
    assert (reply.status, reply.body) == (status, b"x")
    if value is not None:
        assert reply.headers["x-a"] == value


def two_on_one_connection(port: int, first_path: str) -> tuple[bytes, bytes]:
    """GET ``first_path`` then /echo on one keep-alive connection: (first head, what follows)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {first_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received and (data := sock.recv(65536)):
            received += data
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while data := sock.recv(65536):
            received += data
    head, rest = received.split(b"\r\n\r\n", 1)
    return head, rest


@pytest.mark.parametrize(
    "path",
    ["/status_with_body?status=204", "/status_with_streamed_body?status=204&token=dropped-204"],
)
def test_a_204_body_is_dropped_so_the_next_response_parses(
    gateway: GatewayThread, path: str
) -> None:
    head, rest = two_on_one_connection(gateway.port, path)
    assert head.startswith(b"HTTP/1.1 204 ")
    # RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in any response
    # with a status code of 1xx (Informational) or 204 (No Content)."
    assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
    assert rest.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"must not be sent" not in rest
    if "token" in path:
        assert handlers.cleaned_up("dropped-204").wait(5), "the stream was not closed"


@pytest.mark.parametrize("kind", ["status_with_body", "status_with_streamed_body"])
def test_a_304_keeps_its_validators_and_drops_its_body(gateway: GatewayThread, kind: str) -> None:
    head, rest = two_on_one_connection(gateway.port, f"/{kind}?status=304")
    assert head.startswith(b"HTTP/1.1 304 ")
    assert b'\r\netag: "v1"' in head.lower() and b"content-length" not in head.lower()
    assert rest.startswith(b"HTTP/1.1 201 Created\r\n")


@pytest.mark.parametrize("kind", ["status_with_body", "status_with_streamed_body"])
@pytest.mark.parametrize("status", [100, 103, 199])
def test_an_interim_status_code_is_502(gateway: GatewayThread, kind: str, status: int) -> None:
    reply = request(gateway.port, "GET", f"/{kind}?status={status}")
    assert (reply.status, reply.body) == (502, b"502 Bad Gateway: malformed function response\n")


@pytest.mark.parametrize("kind", ["async_stream", "sync_stream"])
def test_a_client_disconnect_cancels_the_handler_and_runs_its_finally(
    gateway: GatewayThread, kind: str
) -> None:
    token = f"disconnect-{kind}"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(f"GET /{kind}?token={token}&pause=0.05 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert b"200 OK" in sock.recv(65536)
        time.sleep(0.2)
    assert handlers.cleaned_up(token).wait(5), "the handler's finally block did not run"
    wait_for_no_streams(gateway)


def test_a_blocking_sync_generator_never_blocks_the_event_loop(gateway: GatewayThread) -> None:
    token = "not-blocking"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(f"GET /sync_stream?token={token}&pause=2 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert b"line 0" in sock.recv(65536) or b"line 0" in sock.recv(65536)
        started = time.monotonic()  # the generator now sleeps 2 s on its thread
        assert request(gateway.port, "GET", "/iterator_body").status == 200
        assert time.monotonic() - started < 1.5
    assert handlers.cleaned_up(token).wait(6)


# --- the shipped examples, through the default config -------------------------------------


def test_example_hello(default_gateway: GatewayThread) -> None:
    reply = request(default_gateway.port, "GET", "/functions/hello?name=Zo%C3%AB")
    assert reply.status == 200
    assert json.loads(reply.body)["message"] == "hello, Zoë"


def timed_chunks(port: int, path: str, headers: str = "") -> Iterator[tuple[float, bytes]]:
    """(seconds since the request, chunk) for each chunk of a chunked response as it comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    stream = sock.makefile("rb")
    try:
        while stream.readline() not in (b"\r\n", b""):
            pass  # the response head
        while size := int(stream.readline().split(b";")[0], 16):
            chunk = stream.read(size)
            stream.readline()
            yield time.monotonic() - started, chunk
    finally:
        stream.close()
        sock.close()


def test_example_chat_streams_token_by_token(default_gateway: GatewayThread) -> None:
    chunks = list(timed_chunks(default_gateway.port, "/functions/chat?prompt=hi&delay_ms=30"))
    text = b"".join(chunk for _, chunk in chunks).decode()
    assert text.startswith("Streaming means") and text.endswith("\u201chi\u201d\n")
    assert len(chunks) > 20, "one chunk per token"
    first_s, last_s = chunks[0][0], chunks[-1][0]
    assert first_s < last_s / 3, "the first token must not wait for the last"


def test_example_progress_feed_resumes_after_last_event_id(default_gateway: GatewayThread) -> None:
    reply = request(
        default_gateway.port,
        "GET",
        "/functions/progress?steps=5&step_ms=10",
        {"Last-Event-ID": "3"},
    )
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = [block for block in reply.body.decode().split("\n\n") if block]
    assert events[0] == "retry: 1000"
    assert [line for line in events[1].splitlines()][:2] == ["id: 4", "event: progress"]
    assert events[2].startswith("id: 5\n")
    assert events[3] == 'event: done\ndata: {"steps": 5}'


def test_example_report_is_ndjson(default_gateway: GatewayThread) -> None:
    reply = request(default_gateway.port, "GET", "/functions/report")
    assert reply.headers["content-type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in reply.body.decode().splitlines()]
    assert len(rows) > 100 and rows[0]["month"] == "2023-01"
    assert sum(row["orders"] for row in rows) == 5000


def test_compressed_events_decode_as_they_arrive(default_gateway: GatewayThread) -> None:
    decoder = zlib.decompressobj(wbits=31)
    for seconds, chunk in timed_chunks(
        default_gateway.port, "/functions/progress?steps=3&step_ms=400", "Accept-Encoding: gzip\r\n"
    ):
        if b"id: 1\n" in decoder.decompress(chunk):
            assert seconds < 1.0, "the first event must decode before the feed ends (1.2 s)"
            return
    pytest.fail("no progress event decoded")


@pytest.mark.parametrize(("heartbeat_ms", "survives"), [(200, True), (5000, False)])
def test_heartbeats_keep_a_slow_feed_past_the_idle_timer(
    make_gateway,  # type: ignore[no-untyped-def]
    heartbeat_ms: int,
    survives: bool,
) -> None:
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/progress"
        integration = "function"
        python_path = "{REPO / "examples"}"
        handler = "demo_functions.progress:feed"
        idle_timeout = 1
    """)
    path = f"/progress?steps=1&step_ms=1600&heartbeat_ms={heartbeat_ms}"
    if survives:
        assert b"event: done" in request(gateway.port, "GET", path).body
    else:
        assert b"event: done" not in read_cut_response(gateway.port, path)
