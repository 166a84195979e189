"""Limits over real sockets: stream caps, the rate limit, upload and header ceilings.

Uploads go through the http_proxy integration to the real test origin, whose ``/upload``
reads the body as it arrives and answers with its length.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mediaproxy.server.admission import RETRY_AFTER_S, route_name
from testbed.origin import OriginThread

from .support import GatewayThread, drain, open_stalled_download, request

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

SLOW_BYTES = 400_000  # at 400 kB/s: one second, long enough to be seen running
MEDIA_BYTES = 1_000_000


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "slow.bin").write_bytes(os.urandom(SLOW_BYTES))
    (root / "media.bin").write_bytes(os.urandom(MEDIA_BYTES))
    with (root / "big.bin").open("wb") as stream:
        stream.truncate(64 * 1024 * 1024)
    return root


def file_route(prefix: str, root: Path, **keys: object) -> str:
    """A file route's TOML, with ``keys`` (limits, access) set on it."""
    settings = "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
    return f'[[routes]]\nprefix = "{prefix}"\nintegration = "file"\nroot = "{root}"\n{settings}'


def running_streams(gateway: GatewayThread) -> int:
    assert gateway.running is not None
    slots = gateway.running.gateway.slots
    return int(gateway.call(lambda: slots.total))  # type: ignore[call-overload]


def wait_for_streams(gateway: GatewayThread, count: int) -> None:
    deadline = time.monotonic() + 5
    while running_streams(gateway) != count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running_streams(gateway) == count


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


@needs_curl
def test_full_caps_answer_503_while_admitted_streams_run_to_completion(
    make_gateway: Callable[[str], GatewayThread], media_root: Path, tmp_path: Path
) -> None:
    gateway = make_gateway(
        "[limits]\nmax_concurrent_streams = 2\nrate_limit_bytes_per_s = 400000\n"
        + file_route("/one", media_root, max_concurrent_streams=1)
        + file_route("/any", media_root)
    )
    downloads = [
        subprocess.Popen(
            ["curl", "-sS", "--fail", "-o", str(tmp_path / name), f"{gateway.base_url}{path}"]
        )
        for name, path in (("a", "/one/slow.bin"), ("b", "/any/slow.bin"))
    ]
    wait_for_streams(gateway, 2)
    refused_by_route = request(gateway.port, "GET", "/one/slow.bin")
    refused_by_gateway = request(gateway.port, "GET", "/any/slow.bin")
    for refused in (refused_by_route, refused_by_gateway):
        assert refused.status == 503
        assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
        assert refused.body == b"503 Service Unavailable\n"
    assert request(gateway.port, "GET", "/healthz").status == 200  # the gateway's own: no cap
    assert running_streams(gateway) == 2, "refusals must neither hold nor free a slot"
    for download in downloads:
        assert download.wait(timeout=30) == 0
    expected = (media_root / "slow.bin").read_bytes()
    assert (tmp_path / "a").read_bytes() == expected and (tmp_path / "b").read_bytes() == expected
    wait_for_streams(gateway, 0)
    assert request(gateway.port, "HEAD", "/one/slow.bin").status == 200


def test_every_way_a_stream_ends_gives_its_slot_back(
    make_gateway: Callable[[str], GatewayThread], media_root: Path, origin: OriginThread
) -> None:
    gateway = make_gateway(
        file_route("/paced", media_root, rate_limit_bytes_per_s=100000, max_concurrent_streams=1)
        + file_route("/idle", media_root, idle_timeout=0.5, max_concurrent_streams=1)
        + f"""
        [[routes]]
        prefix = "/upload"
        integration = "http_proxy"
        upstream = "{origin.url}upload/"
        max_upload_bytes = 10
        api_keys = ["right"]
        max_concurrent_streams = 1
    """
    )
    # A client that leaves while the rate limit holds its stream asleep.
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"GET /paced/media.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_for_streams(gateway, 1)
    sock.close()
    # A client that stops reading: the idle timer cuts it.
    stalled = open_stalled_download(gateway.port, "/idle/big.bin")
    time.sleep(1.2)
    assert drain(stalled) < 64 * 1024 * 1024
    stalled.close()
    # Refused, by access and by upload size; an upload cut off by its client.
    assert request(gateway.port, "POST", "/upload/x").status == 401
    assert (
        request(
            gateway.port, "POST", "/upload/x", headers={"X-API-Key": "right"}, body=b"x" * 11
        ).status
        == 413
    )
    leaving = socket.create_connection(("127.0.0.1", gateway.port))
    leaving.sendall(
        b"POST /upload/x HTTP/1.1\r\nHost: x\r\nX-API-Key: right\r\nContent-Length: 5\r\n\r\nab"
    )
    wait_for_streams(gateway, 1)
    leaving.close()
    wait_for_streams(gateway, 0)
    # Every cap is 1: had any ending leaked its slot, one of these would be a 503.
    assert (
        request(gateway.port, "GET", "/paced/slow.bin", headers={"Range": "bytes=0-9"}).status
        == 206
    )
    assert request(gateway.port, "HEAD", "/idle/big.bin").status == 200
    assert (
        json.loads(
            request(
                gateway.port, "POST", "/upload/x", headers={"X-API-Key": "right"}, body=b"12345"
            ).body
        )["bytes"]
        == 5
    )
    assert gateway.running is not None
    slots = gateway.running.gateway.slots
    assert gateway.call(
        lambda: [
            slots.table.running(route_name(prefix))  # type: ignore[call-overload]
            for prefix in ("/paced", "/idle", "/upload")
        ]
    ) == [0, 0, 0]


@needs_curl
def test_the_rate_limit_lets_the_burst_through_then_paces_without_tripping_idle(
    make_gateway: Callable[[str], GatewayThread], media_root: Path, tmp_path: Path
) -> None:
    gateway = make_gateway(
        file_route(
            "/media",
            media_root,
            rate_limit_bytes_per_s=500000,
            rate_limit_after_bytes=100000,
            idle_timeout=0.3,
        )
    )
    started = time.monotonic()
    result = curl("--fail", "-o", str(tmp_path / "out"), f"{gateway.base_url}/media/media.bin")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == (media_root / "media.bin").read_bytes()
    # 900 kB past the burst at 500 kB/s: 1.8 s in theory; the bounds are generous.
    assert 1.2 < elapsed < 6, elapsed
    # The burst alone is not paced.
    started = time.monotonic()
    burst = request(gateway.port, "GET", "/media/media.bin", headers={"Range": "bytes=0-99999"})
    assert burst.status == 206 and len(burst.body) == 100_000
    assert time.monotonic() - started < 0.5


def send_chunked(port: int, path: str, chunks: list[bytes], headers: str = "") -> bytes:
    """A chunked upload; then read the whole answer (the server may close after it)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Connection: close\r\n{headers}\r\n".encode()
    )
    for chunk in chunks:
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        time.sleep(0.02)
    sock.sendall(b"0\r\n\r\n")
    sock.settimeout(10)
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return answer


@needs_curl
def test_uploads_past_max_upload_bytes_get_413(
    make_gateway: Callable[[str], GatewayThread],
    media_root: Path,
    tmp_path: Path,
    origin: OriginThread,
) -> None:
    gateway = make_gateway(
        f"""
        [limits]
        max_upload_bytes = 100000
        [[routes]]
        prefix = "/upload"
        integration = "http_proxy"
        upstream = "{origin.url}upload/"
    """
        + file_route("/media", media_root)
    )
    (tmp_path / "small").write_bytes(b"s" * 100_000)
    ok = curl("--data-binary", f"@{tmp_path / 'small'}", f"{gateway.base_url}/upload/x")
    assert json.loads(ok.stdout)["bytes"] == 100_000
    # Declared too large: refused from the headers alone, the origin never asked, and curl
    # (which sends Expect: 100-continue) is spared the upload.
    asked = origin.origin.requests
    too_large = curl(
        "--data-binary",
        f"@{media_root / 'media.bin'}",
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        f"{gateway.base_url}/upload/x",
    )
    assert too_large.stdout == b"413"
    assert origin.origin.requests == asked
    # Chunked: counted as it arrives, refused once past the limit.
    within = send_chunked(gateway.port, "/upload/x", [b"c" * 50_000, b"c" * 50_000])
    assert within.startswith(b"HTTP/1.1 200") and b'"bytes": 100000' in within
    past = send_chunked(gateway.port, "/upload/x", [b"c" * 60_000, b"c" * 60_000])
    assert past.startswith(b"HTTP/1.1 413 ")
    assert past.endswith(b"\r\n413 Payload Too Large\n")
    # Limits come before the method: a file route says 413 past the limit, 405 within it.
    assert request(gateway.port, "POST", "/media/media.bin", body=b"x" * 100_001).status == 413
    assert request(gateway.port, "POST", "/media/media.bin", body=b"x").status == 405
    wait_for_streams(gateway, 0)


@needs_curl
def test_headers_past_max_header_bytes_are_431(
    make_gateway: Callable[[str], GatewayThread], media_root: Path
) -> None:
    gateway = make_gateway("[server]\nmax_header_bytes = 4096\n" + file_route("/media", media_root))
    url = f"{gateway.base_url}/media/slow.bin"
    fits = curl("-I", "-H", "X-Pad: " + "a" * 3000, url)
    assert fits.returncode == 0 and fits.stdout.startswith(b"HTTP/1.1 200")
    # RFC 6585 §5; Tornado alone would close the connection without a status.
    too_big = curl("-I", "-H", "X-Pad: " + "a" * 5000, url)
    assert too_big.returncode == 0, too_big
    assert too_big.stdout.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
