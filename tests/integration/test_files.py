"""The file integration over real sockets, against real files."""

from __future__ import annotations

import email.parser
import logging
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .support import GatewayThread, get_and_head, request

SAMPLE_MEDIA = Path(__file__).resolve().parents[2] / "sample_media"


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    # Bytes no signature matches: fresh random ones now and then begin like some file type
    # (libmagic once read a run's as a DOS executable).
    (root / "data.bin").write_bytes(random.Random(300_000).randbytes(300_000))
    (root / "small.txt").write_bytes(b"0123456789abcdefghij")
    (root / "empty.txt").write_bytes(b"")
    (root / "table.csv").write_bytes(b"id;name\n1;a\n2;b\n")
    (root / "résumé – notes.txt").write_text("non-ASCII name\n")
    (root / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside the root")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (root / "inside-link.txt").symlink_to(root / "small.txt")
    (root / "sub" / "inner.txt").write_text("inner")
    (root / "sub-link").symlink_to(root / "sub")
    (root / "secret-link").symlink_to(root / ".secret")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "x.txt").write_text("outside the root")
    (root / "escape-dir").symlink_to(tmp_path / "outside-dir")
    return root


@pytest.fixture(params=["true", "false"], ids=["sendfile", "reads"])
def gateway(make_gateway, media_root: Path, request) -> GatewayThread:  # type: ignore[no-untyped-def]
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{media_root}"
        zero_copy = {request.param}
        [[routes]]
        prefix = "/sample"
        integration = "file"
        root = "{SAMPLE_MEDIA}"
    """)
    return gateway


def raw_request(port: int, request_line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_full_file_with_validators(gateway: GatewayThread, media_root: Path) -> None:
    reply = get_and_head(gateway, "/files/data.bin")
    assert reply.status == 200
    assert reply.body == (media_root / "data.bin").read_bytes()
    assert reply.headers["content-length"] == "300000"
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.headers["accept-ranges"] == "bytes"
    assert reply.headers["etag"].startswith('"')
    assert reply.headers["last-modified"].endswith("GMT")
    assert reply.headers["server"] == "mediaproxy"


@pytest.mark.parametrize(
    "name, media_type",
    [
        ("video/testsrc-h264-aac.mp4", "video/mp4"),
        ("video/smptebars-vp9-opus.webm", "video/webm"),
        ("audio/sine-523hz.mp3", "audio/mpeg"),
    ],
)
def test_sample_media_types_are_sniffed(gateway: GatewayThread, name: str, media_type: str) -> None:
    path = SAMPLE_MEDIA / name
    if not path.exists():
        pytest.skip(f"{name} not in sample_media")
    reply = get_and_head(gateway, f"/sample/{name}")
    assert reply.headers["content-type"] == media_type
    assert reply.body == path.read_bytes()


def test_text_types_use_the_extension_only_to_break_ties(gateway: GatewayThread) -> None:
    assert (
        request(gateway.port, "GET", "/files/table.csv").headers["content-type"]
        == "text/csv; charset=utf-8"
    )
    assert (
        request(gateway.port, "GET", "/files/small.txt").headers["content-type"]
        == "text/plain; charset=utf-8"
    )


def test_empty_file(gateway: GatewayThread) -> None:
    reply = get_and_head(gateway, "/files/empty.txt")
    assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize(
    "range_header, status, content_range, start, stop",
    [
        ("bytes=0-99", 206, "bytes 0-99/300000", 0, 100),
        ("bytes=299999-", 206, "bytes 299999-299999/300000", 299999, 300000),  # the final byte
        ("bytes=-500", 206, "bytes 299500-299999/300000", 299500, 300000),
        ("bytes=1000-", 206, "bytes 1000-299999/300000", 1000, 300000),
        ("bytes=100-999999", 206, "bytes 100-299999/300000", 100, 300000),
        ("bytes=-999999", 206, "bytes 0-299999/300000", 0, 300000),
        ("items=0-5", 200, None, 0, 300000),
    ],
)
def test_single_ranges(
    gateway: GatewayThread,
    media_root: Path,
    range_header: str,
    status: int,
    content_range: str | None,
    start: int,
    stop: int,
) -> None:
    reply = request(gateway.port, "GET", "/files/data.bin", {"Range": range_header})
    assert reply.status == status
    assert reply.headers.get("content-range") == content_range
    assert reply.body == (media_root / "data.bin").read_bytes()[start:stop]
    assert int(reply.headers["content-length"]) == stop - start


def test_the_configured_send_path_is_the_one_used(
    gateway: GatewayThread, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        calls.append(count)
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    reply = request(gateway.port, "GET", "/files/data.bin", {"Range": "bytes=100-"})
    assert reply.body == (media_root / "data.bin").read_bytes()[100:]
    zero_copy = gateway.config.routes[0].settings.zero_copy
    assert bool(calls) == zero_copy


def test_head_ignores_range(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "HEAD", "/files/data.bin", {"Range": "bytes=0-9"})
    assert reply.status == 200 and reply.headers["content-length"] == "300000"


@pytest.mark.parametrize("range_header", ["bytes=300000-", "bytes=400000-500000", "bytes=-0"])
def test_unsatisfiable_range(gateway: GatewayThread, range_header: str) -> None:
    reply = request(gateway.port, "GET", "/files/data.bin", {"Range": range_header})
    assert reply.status == 416
    assert reply.headers["content-range"] == "bytes */300000"


def test_multiple_ranges_are_multipart_and_coalesced(
    gateway: GatewayThread, media_root: Path
) -> None:
    content = (media_root / "data.bin").read_bytes()
    reply = request(
        gateway.port, "GET", "/files/data.bin", {"Range": "bytes=0-9, 5-19, 1000-1099, -10"}
    )
    assert reply.status == 206
    assert reply.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(reply.headers["content-length"]) == len(reply.body)
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + reply.headers["content-type"].encode() + b"\r\n\r\n" + reply.body
    )
    parts = [
        (part["Content-Range"], part.get_payload(decode=True)) for part in message.get_payload()
    ]
    assert (
        parts
        == [
            ("bytes 0-19/300000", content[0:20]),  # 0-9 and 5-19 overlap: one part
            ("bytes 1000-1099/300000", content[1000:1100]),
            ("bytes 299990-299999/300000", content[-10:]),
        ]
    )


def test_conditional_requests(gateway: GatewayThread) -> None:
    first = request(gateway.port, "GET", "/files/small.txt")
    etag, modified = first.headers["etag"], first.headers["last-modified"]

    not_modified = request(gateway.port, "GET", "/files/small.txt", {"If-None-Match": etag})
    assert not_modified.status == 304 and not_modified.body == b""
    assert not_modified.headers["etag"] == etag
    assert (
        request(gateway.port, "GET", "/files/small.txt", {"If-Modified-Since": modified}).status
        == 304
    )
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    assert (
        request(
            gateway.port,
            "GET",
            "/files/small.txt",
            {"If-None-Match": '"other"', "If-Modified-Since": modified},
        ).status
        == 200
    )
    assert request(gateway.port, "GET", "/files/small.txt", {"If-Match": '"other"'}).status == 412
    assert request(gateway.port, "GET", "/files/small.txt", {"If-Match": etag}).status == 200
    assert (
        request(
            gateway.port,
            "GET",
            "/files/small.txt",
            {"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"},
        ).status
        == 412
    )


def test_if_range(gateway: GatewayThread) -> None:
    first = request(gateway.port, "GET", "/files/small.txt")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for validator in (etag, modified):
        reply = request(
            gateway.port, "GET", "/files/small.txt", {"Range": "bytes=0-3", "If-Range": validator}
        )
        assert (reply.status, reply.body) == (206, b"0123")
    for stale in ('"stale"', "Sat, 01 Jan 2000 00:00:00 GMT", "W/" + etag):
        reply = request(
            gateway.port, "GET", "/files/small.txt", {"Range": "bytes=0-3", "If-Range": stale}
        )
        assert (reply.status, reply.body) == (200, b"0123456789abcdefghij")


def test_etag_changes_with_the_file(gateway: GatewayThread, media_root: Path) -> None:
    before = request(gateway.port, "GET", "/files/small.txt").headers["etag"]
    path = media_root / "small.txt"
    path.write_bytes(b"changed content")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = request(gateway.port, "GET", "/files/small.txt")
    assert after.headers["etag"] != before and after.body == b"changed content"


def test_download_flag_adds_disposition(gateway: GatewayThread) -> None:
    reply = get_and_head(gateway, "/files/r%C3%A9sum%C3%A9%20%E2%80%93%20notes.txt?download")
    assert reply.status == 200
    disposition = reply.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%80%93%20notes.txt" in disposition
    assert "content-disposition" not in request(gateway.port, "GET", "/files/small.txt").headers


@pytest.mark.parametrize(
    "path, status",
    [
        (b"/files/../outside.txt", 400),
        (b"/files/%2e%2e/outside.txt", 400),
        (b"/files/sub/%2E%2E/%2e%2e/outside.txt", 400),
        (b"/files/..%5coutside.txt", 400),
        (b"/files/a%00b", 400),
        (b"/files/%zz", 400),
        (b"/files/escape.txt", 403),
        (b"/files/escape-dir/x.txt", 403),
        (b"/files/secret-link", 404),
        (b"/files/small.txt/x", 404),
        (b"/files/.secret", 404),
        (b"/files/sub", 404),
        (b"/files/sub/", 404),
        (b"/files/", 404),
        (b"/files/missing.bin", 404),
        (b"/filesx/small.txt", 404),
        (b"/nowhere", 404),
    ],
)
def test_nothing_outside_the_root(gateway: GatewayThread, path: bytes, status: int) -> None:
    reply = raw_request(gateway.port, b"GET " + path + b" HTTP/1.1")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert int(head.split(b" ")[1]) == status
    assert b"Traceback" not in body and b"outside the root" not in body
    assert body.startswith(str(status).encode())


@pytest.mark.parametrize(
    "path, status",
    [
        (b"/files/" + b"n" * 300, 404),  # ENAMETOOLONG: nginx answers 404 too
        (b"/files/" + b"d" * 300 + b"/x.txt", 404),
        (b"/files/" + b"%C3%A9" * 150, 404),  # 150 characters, 300 bytes
        (b"/files/" + b"d/" * 2100 + b"x", 404),  # the whole path beyond PATH_MAX
        (b"/files/loop", 404),  # ELOOP: a symlink cycle names no file
        (b"/files/loop-dir/x.txt", 404),
    ],
)
def test_names_the_file_system_refuses_are_client_errors(
    gateway: GatewayThread,
    media_root: Path,
    path: bytes,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """They were 500s with a traceback logged at ERROR: one log flood line per request."""
    (media_root / "loop").symlink_to(media_root / "loop")
    (media_root / "loop-dir").symlink_to(media_root / "loop-dir")
    caplog.set_level(logging.INFO)
    reply = raw_request(gateway.port, b"GET " + path + b" HTTP/1.1")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert int(head.split(b" ")[1]) == status
    assert body == f"{status} Not Found\n".encode()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)


def test_symlink_inside_the_root_is_served(gateway: GatewayThread) -> None:
    assert request(gateway.port, "GET", "/files/inside-link.txt").body == b"0123456789abcdefghij"
    assert request(gateway.port, "GET", "/files/sub-link/inner.txt").body == b"inner"
    assert request(gateway.port, "GET", "/files/sub/inner.txt").body == b"inner"


def test_methods_other_than_get_and_head(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "POST", "/files/small.txt", body=b"x")
    assert reply.status == 405 and reply.headers["allow"] == "GET, HEAD"


def test_healthz(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")


def test_keep_alive_serves_several_requests(gateway: GatewayThread, media_root: Path) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    for name in ("data.bin", "small.txt", "missing", "data.bin"):
        connection.request("GET", f"/files/{name}")
        reply = connection.getresponse()
        body = reply.read()
        if name != "missing":
            assert body == (media_root / name).read_bytes()
    connection.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_oj_saves_a_non_ascii_name_readably(gateway: GatewayThread, tmp_path: Path) -> None:
    """curl ignores filename*: it saves under the ASCII fallback, which must read as the name."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-OJ",
            f"{gateway.base_url}/files/r%C3%A9sum%C3%A9%20%E2%80%93%20notes.txt?download",
        ],
        check=True,
        timeout=30,
        cwd=downloads,
    )
    assert [path.name for path in downloads.iterdir()] == ["resume - notes.txt"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_resumes_a_partial_download(
    gateway: GatewayThread, media_root: Path, tmp_path: Path
) -> None:
    content = (media_root / "data.bin").read_bytes()
    target = tmp_path / "download.bin"
    target.write_bytes(content[:123_457])
    subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-C",
            "-",
            "-o",
            str(target),
            f"{gateway.base_url}/files/data.bin",
        ],
        check=True,
        timeout=30,
    )
    assert target.read_bytes() == content


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
def test_ffprobe_reads_sample_video_over_http(gateway: GatewayThread) -> None:
    videos = sorted((SAMPLE_MEDIA / "video").glob("*.mp4"))
    if not videos:
        pytest.skip("no sample mp4")
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            f"{gateway.base_url}/sample/video/{videos[0].name}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert set(result.stdout.split()) >= {"h264", "aac"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "multipart/form-data; boundary=x"},  # Tornado would parse this itself
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
        {"Content-Type": "application/json"},
        {},
    ],
)
def test_a_get_without_a_body_is_served_whatever_its_content_type(
    gateway: GatewayThread, headers: dict[str, str]
) -> None:
    reply = request(gateway.port, "GET", "/files/small.txt", headers)
    assert (reply.status, reply.body) == (200, b"0123456789abcdefghij")
