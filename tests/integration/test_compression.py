"""Streaming compression at the Exchange, seen by real clients: gzip, zstd, and when not."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import zlib
from pathlib import Path

import pytest
import zstandard

from .support import GatewayThread, request, series

SAMPLE_MEDIA = Path(__file__).resolve().parents[2] / "sample_media"


@pytest.fixture
def gateway(make_gateway, tmp_path: Path) -> GatewayThread:  # type: ignore[no-untyped-def]
    database = tmp_path / "empty.sqlite"
    sqlite3.connect(database).close()
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/rows"
        integration = "csv_export"
        database = "{database}"
        query = "{series(20_000, "'row number ' || i")}"
        [[routes]]
        prefix = "/endless"
        integration = "csv_export"
        database = "{database}"
        query = "{series(10**9, "'row number ' || i")}"
        [[routes]]
        prefix = "/plain-rows"
        integration = "csv_export"
        database = "{database}"
        query = "{series(100, "i")}"
        compress = false
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{SAMPLE_MEDIA}"
        [[routes]]
        prefix = "/compressed-files"
        integration = "file"
        root = "{SAMPLE_MEDIA}"
        compress = true
        [[routes]]
        prefix = "/function"
        integration = "function"
        handler = "tests.integration.function_handlers:echo"
        [[routes]]
        prefix = "/short"
        integration = "function"
        handler = "tests.integration.function_handlers:short_reply"
        [[routes]]
        prefix = "/short-compressed"
        integration = "function"
        handler = "tests.integration.function_handlers:short_reply"
        compress_min_bytes = 0
    """)
    return gateway


def identity_body(gateway: GatewayThread, path: str) -> bytes:
    reply = request(gateway.port, "GET", path)
    assert "content-encoding" not in reply.headers
    return reply.body


def test_gzip_when_accepted(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/rows", {"Accept-Encoding": "gzip"})
    assert reply.headers["content-encoding"] == "gzip"
    assert reply.headers["vary"] == "Accept-Encoding"
    assert "content-length" not in reply.headers
    assert zlib.decompress(reply.body, wbits=31) == identity_body(gateway, "/rows")
    assert len(reply.body) < len(identity_body(gateway, "/rows")) / 3


def test_zstd_preferred_when_both_accepted(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/rows", {"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert reply.headers["content-encoding"] == "zstd"
    decompressed = zstandard.ZstdDecompressor().decompressobj().decompress(reply.body)
    assert decompressed == identity_body(gateway, "/rows")


def test_identity_without_accept_encoding_but_vary(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/rows")
    assert "content-encoding" not in reply.headers
    assert reply.headers["vary"] == "Accept-Encoding"
    assert reply.body.startswith(b"i,extra\r\n1,row number 1\r\n")


def test_head_announces_the_coding_a_get_would_use(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "HEAD", "/rows", {"Accept-Encoding": "gzip"})
    assert (reply.status, reply.body) == (200, b"")
    assert reply.headers["content-encoding"] == "gzip"
    assert "content-length" not in reply.headers


@pytest.mark.parametrize("path", ["/short-compressed", "/compressed-files/data/people.csv"])
def test_a_compressed_head_has_the_get_headers_and_no_content_length(
    gateway: GatewayThread, path: str
) -> None:
    got = request(gateway.port, "GET", path, {"Accept-Encoding": "gzip"})
    head = request(gateway.port, "HEAD", path, {"Accept-Encoding": "gzip"})
    assert got.headers["content-encoding"] == "gzip" and head.body == b""
    assert "content-length" not in head.headers
    body_dependent = {"date", "transfer-encoding"}  # a compressed GET goes out chunked
    assert {k: v for k, v in head.headers.items() if k not in body_dependent} == {
        k: v for k, v in got.headers.items() if k not in body_dependent
    }


def test_route_switch_turns_it_off(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/plain-rows", {"Accept-Encoding": "gzip"})
    assert "content-encoding" not in reply.headers and "vary" not in reply.headers


def test_each_chunk_is_flushed_so_a_stream_decodes_as_it_arrives(gateway: GatewayThread) -> None:
    """An endless export: its first rows must decode before the response ends."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, body = received.split(b"\r\n\r\n", 1)
        assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
        size_line, rest = body.split(b"\r\n", 1) if b"\r\n" in body else (body, b"")
        while len(rest) < int(size_line, 16):
            rest += sock.recv(65536)
        first_chunk = rest[: int(size_line, 16)]
    decoded = zlib.decompressobj(wbits=31).decompress(first_chunk)
    assert decoded.startswith(b"i,extra\r\n1,row number 1\r\n")
    assert decoded.endswith(b"\r\n"), "the first chunk must decode to whole rows"


def test_files_are_not_compressed_by_default(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/files/data/people.csv", {"Accept-Encoding": "gzip"})
    assert "content-encoding" not in reply.headers and "vary" not in reply.headers
    assert reply.headers["content-length"] == str(len(reply.body))


def test_compressed_file_route_compresses_text_only_and_never_ranges(
    gateway: GatewayThread,
) -> None:
    text = request(
        gateway.port, "GET", "/compressed-files/data/people.csv", {"Accept-Encoding": "gzip"}
    )
    assert text.headers["content-encoding"] == "gzip"
    assert text.headers["etag"].startswith('W/"')
    original = (SAMPLE_MEDIA / "data" / "people.csv").read_bytes()
    assert zlib.decompress(text.body, wbits=31) == original
    video = request(
        gateway.port,
        "GET",
        "/compressed-files/video/testsrc-h264-aac.mp4",
        {"Accept-Encoding": "gzip"},
    )
    assert "content-encoding" not in video.headers and "vary" not in video.headers
    assert video.body == (SAMPLE_MEDIA / "video" / "testsrc-h264-aac.mp4").read_bytes()
    partial = request(
        gateway.port,
        "GET",
        "/compressed-files/data/people.csv",
        {"Accept-Encoding": "gzip", "Range": "bytes=0-9"},
    )
    assert partial.status == 206 and "content-encoding" not in partial.headers
    assert partial.body == original[:10]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_compressed_decodes_the_stream(gateway: GatewayThread, tmp_path: Path) -> None:
    out = tmp_path / "rows.csv"
    subprocess.run(
        ["curl", "-sS", "--fail", "--compressed", "-o", str(out), f"{gateway.base_url}/rows"],
        check=True,
        timeout=60,
    )
    assert out.read_bytes() == identity_body(gateway, "/rows")


def test_a_short_reply_of_known_length_is_not_compressed(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/short", {"Accept-Encoding": "gzip"})
    assert "content-encoding" not in reply.headers
    assert reply.headers["content-length"] == str(len(reply.body)) and len(reply.body) < 1024
    assert reply.headers["vary"] == "Accept-Encoding"  # a longer reply would have been
    head = request(gateway.port, "HEAD", "/short", {"Accept-Encoding": "gzip"})
    assert "content-encoding" not in head.headers


def test_compress_min_bytes_0_compresses_whatever_the_length(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/short-compressed", {"Accept-Encoding": "gzip"})
    assert reply.headers["content-encoding"] == "gzip"
    assert "content-length" not in reply.headers
