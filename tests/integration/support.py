"""Real servers on real sockets: the gateway runs on its own event loop in a thread
(``testbed.gateway``). Tests talk to it with real clients (http.client, raw sockets, curl).
We use this small fixture instead of pytest-tornado: pytest-tornado 0.8 fails to load under
``-W error`` (pytest 9 deprecations) and is unmaintained, and a thread per server keeps the
client code plainly synchronous, the way a real client is.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testbed.gateway import GatewayThread
from testbed.s3store import Keys, S3Store


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes = field(repr=False)


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30,
) -> Response:
    """One request on a fresh connection; header names lower-cased in ``headers``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        data = reply.read()
        header_list = reply.getheaders()
        return Response(reply.status, {k.lower(): v for k, v in header_list}, header_list, data)
    finally:
        connection.close()


def connect(gateway: GatewayThread) -> socket.socket:
    """A raw client connection to ``gateway``."""
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def open_stalled_download(port: int, path: str, headers: str = "") -> socket.socket:
    """A GET whose client never reads: the stream stays running (small buffers fill fast).
    ``headers``: more header lines, each ending in CRLF."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return sock


def drain(sock: socket.socket, pause_s: float = 0.0, chunk: int = 65536) -> int:
    """Read until the server closes; the number of bytes received (headers included)."""
    received = 0
    sock.settimeout(20)
    try:
        while data := sock.recv(chunk):
            received += len(data)
            if pause_s:
                time.sleep(pause_s)
    except ConnectionResetError:
        pass
    return received


def wait_for_no_streams(gateway: GatewayThread) -> None:
    deadline = time.monotonic() + 5
    while gateway.active_streams() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.active_streams() == 0


def read_cut_response(port: int, path: str, timeout: float = 30) -> bytes:
    """GET a response that must start (200) and then be cut; the bytes that came before."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        assert reply.status == 200
        try:
            reply.read()
        except http.client.IncompleteRead as cut:
            return cut.partial
        raise AssertionError(f"{path}: the response ended cleanly; it should have been cut")
    finally:
        connection.close()


def start_slow_download(url: str, rate_bytes_per_s: int, out: Path) -> subprocess.Popen[str]:
    """curl downloading ``url`` into ``out`` at ``rate_bytes_per_s``, in the background; its
    stdout is the status code once ``communicate()`` returns."""
    return subprocess.Popen(
        ["curl", "-sS", "--limit-rate", str(rate_bytes_per_s), "-o", str(out)]
        + ["-w", "%{http_code}", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Poll until ``condition()``: the server counts an exchange just after its last byte."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def make_sparse_file(path: Path, size_bytes: int) -> Path:
    """A large file of zeros that costs no disk."""
    with path.open("wb") as stream:
        stream.truncate(size_bytes)
    return path


def read_access_log(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON access log, parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def get_and_head(
    gateway: GatewayThread, path: str, headers: dict[str, str] | None = None
) -> Response:
    """GET, and check that HEAD answers with exactly the same status and headers."""
    got = request(gateway.port, "GET", path, headers)
    head = request(gateway.port, "HEAD", path, headers)
    assert head.body == b""
    assert head.status == got.status
    strip = {"date"}
    assert {k: v for k, v in head.headers.items() if k not in strip} == {
        k: v for k, v in got.headers.items() if k not in strip
    }
    return got


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def series(count: int, extra: str) -> str:
    """``count`` rows (i, extra), produced as they are fetched in both databases (PostgreSQL's
    generate_series would compute them all before the first)."""
    return (
        f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
        f"WHERE i < {count}) SELECT i, {extra} AS extra FROM s"
    )


RSS_TOLERANCE_BYTES = 16 * 1024 * 1024  # one leaked 64 KiB chunk per stream would be 64 MB


OBJECT_TOLERANCE = 200  # one leaked object per stream would be 1,000


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/status") as status_file:
        for line in status_file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (EC: fast to generate)."""
    certificate, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return certificate, key


MakeGateway = Callable[[str], GatewayThread]


def route(
    store: S3Store,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    extra: str = "",
    prefix: str = "/s3",
) -> str:
    monkeypatch.setenv("TEST_S3_KEY", keys.access_key_id)
    monkeypatch.setenv("TEST_S3_SECRET", keys.secret_access_key)
    return f"""
        [[routes]]
        prefix = "{prefix}"
        integration = "s3"
        bucket = "{store.bucket}"
        endpoint = "{store.url}"
        access_key_id_env = "TEST_S3_KEY"
        secret_access_key_env = "TEST_S3_SECRET"
        {extra}
    """


class Server:
    """The command in a subprocess; its stderr lines collected as they come."""

    def __init__(self, config: Path) -> None:
        # Its own process group, so a failed test can kill the workers too.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mediaproxy", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        started = self.wait_for_line(r"(\d+) worker processes \(pids ([\d ]+)\)")
        self.worker_pids = set(map(int, started.group(2).split()))
        self.started_at = time.monotonic()
        listening = self.wait_for_line(r"listening on http://127\.0\.0\.1:(\d+)")
        self.port = int(listening.group(1))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited, workers and all
        self.process.wait()
        self._reader.join(5)
        assert self.process.stderr is not None
        self.process.stderr.close()

    def wait_for_line(self, pattern: str, timeout_s: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if match := re.search(pattern, "".join(self.lines)):
                return match
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")
