"""s3 routes when the store misbehaves: both timers, error documents, and nothing leaking.

The timers and the error documents use a fake store on a raw socket (a real S3 server will
not stall on demand); the leak test uses the real one (moto's, see s3store.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.s3store import S3Store

from .support import (
    OBJECT_TOLERANCE,
    RSS_TOLERANCE_BYTES,
    GatewayThread,
    MakeGateway,
    make_certificate,
    open_fds,
    read_cut_response,
    request,
    route,
    rss_bytes,
    wait_for_no_streams,
)

XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
    "</Message>{extra}<RequestId>1</RequestId></Error>"
)


def error_document(
    status: str, code: str, message: str, extra: str = "", headers: str = ""
) -> bytes:
    body = XML.format(code=code, message=message, extra=extra).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n{headers}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


ANSWERS = {
    "slowdown": error_document(
        "503 Slow Down",
        "SlowDown",
        "Please reduce your request rate.",
        headers="Retry-After: 7\r\n",
    ),
    "internal": error_document("500 Internal Server Error", "InternalError", "Try again."),
    "skewed": error_document(
        "403 Forbidden",
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
    ),
    "region": error_document(
        "400 Bad Request",
        "AuthorizationHeaderMalformed",
        "the region 'us-east-1' is wrong; expecting 'eu-west-1'",
        "<Region>eu-west-1</Region>",
    ),
    "hello": (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
        b"Connection: close\r\n\r\nhello\n"
    ),
    "expired": error_document("400 Bad Request", "ExpiredToken", "The provided token has expired."),
}


class FakeStore:
    """Answers each request by the key's last segment: an error document, or a stall.

    stall-before   reads the request, never answers
    stall-after    headers and 1,000 of the 100,000 bytes they promise, then silence
    trickle        headers, then 100 bytes every 50 ms, for ever
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        if self._tls is not None:
            try:
                connection.settimeout(5)
                connection = self._tls.wrap_socket(connection, server_side=True)
            except (OSError, ssl.SSLError):
                connection.close()
                return  # the gateway refused our certificate
        with connection:
            connection.settimeout(5)
            received = b""
            while b"\r\n\r\n" not in received:
                data = connection.recv(65536)
                if not data:
                    return
                received += data
            behaviour = received.split(b" ", 2)[1].rsplit(b"/", 1)[-1].decode()
            try:
                if behaviour in ANSWERS:
                    connection.sendall(ANSWERS[behaviour])
                elif behaviour == "stall-after":
                    connection.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
                        b"Content-Length: 100000\r\n\r\n" + bytes(1000)
                    )
                elif behaviour == "trickle":
                    connection.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
                        b"Content-Length: 100000000\r\n\r\n"
                    )
                    while not self._stop.wait(0.05):
                        connection.sendall(bytes(100))
                self._stop.wait(10)  # stall (or linger) until the gateway hangs up
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(10)


@pytest.fixture
def fake_store() -> Iterator[FakeStore]:
    store = FakeStore()
    yield store
    store.stop()


@pytest.fixture
def fake_gateway(
    fake_store: FakeStore, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> GatewayThread:
    monkeypatch.setenv("TEST_S3_KEY", "AKIAFAKE")
    monkeypatch.setenv("TEST_S3_SECRET", "secret")
    common = f"""
        integration = "s3"
        bucket = "media"
        endpoint = "http://127.0.0.1:{fake_store.port}"
        access_key_id_env = "TEST_S3_KEY"
        secret_access_key_env = "TEST_S3_SECRET"
    """
    return make_gateway(f"""
        [[routes]]
        prefix = "/idle"
        idle_timeout = 1
        {common}
        [[routes]]
        prefix = "/capped"
        max_stream_duration = 1
        {common}
    """)


def test_a_store_that_stalls_before_its_headers_is_504(fake_gateway: GatewayThread) -> None:
    started = time.monotonic()
    assert request(fake_gateway.port, "GET", "/idle/stall-before").status == 504
    assert 0.9 < time.monotonic() - started < 5
    wait_for_no_streams(fake_gateway)


def test_a_store_that_stalls_mid_body_is_cut(fake_gateway: GatewayThread) -> None:
    assert len(read_cut_response(fake_gateway.port, "/idle/stall-after")) == 1000
    wait_for_no_streams(fake_gateway)


def test_a_stream_past_its_maximum_duration_is_cut(fake_gateway: GatewayThread) -> None:
    started = time.monotonic()
    received = read_cut_response(fake_gateway.port, "/capped/trickle")
    assert 0.9 < time.monotonic() - started < 5
    assert 0 < len(received) < 100_000_000
    wait_for_no_streams(fake_gateway)


@pytest.mark.parametrize(
    "key, status, retry_after, fix",
    [
        ("slowdown", 503, "7", None),
        ("internal", 502, "1", None),
        ("skewed", 502, None, "this host's clock is too far from the store's"),
        ("region", 502, None, "the bucket is not in region us-east-1 (eu-west-1)"),
        (
            "expired",
            502,
            None,
            "the session token from $TEST_S3_KEY and $TEST_S3_SECRET has expired",
        ),
    ],
)
def test_store_errors_are_mapped_and_logged(
    fake_gateway: GatewayThread,
    caplog: pytest.LogCaptureFixture,
    key: str,
    status: int,
    retry_after: str | None,
    fix: str | None,
) -> None:
    caplog.set_level(logging.INFO)
    for method in ("GET", "HEAD"):
        caplog.clear()
        reply = request(fake_gateway.port, method, f"/idle/{key}")
        assert reply.status == status
        assert reply.headers.get("retry-after") == retry_after
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if fix is None:
            assert not warnings
        else:
            assert any(fix in message for message in warnings), warnings


# --- a store over https --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_an_https_store_is_verified_against_the_trust_store(
    tmp_path: Path,
    make_gateway: MakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    certificate, key = make_certificate(tmp_path, "store")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    store = FakeStore(tls=context)
    try:
        monkeypatch.setenv("TEST_S3_KEY", "AKIAFAKE")
        monkeypatch.setenv("TEST_S3_SECRET", "secret")
        route_text = f"""
            [[routes]]
            prefix = "/tls"
            integration = "s3"
            bucket = "media"
            endpoint = "https://127.0.0.1:{store.port}"
            access_key_id_env = "TEST_S3_KEY"
            secret_access_key_env = "TEST_S3_SECRET"
        """
        untrusted = make_gateway(route_text)
        assert request(untrusted.port, "GET", "/tls/hello").status == 502
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # as an operator's CA bundle
        trusted = make_gateway(route_text)
        reply = request(trusted.port, "GET", "/tls/hello")
        assert (reply.status, reply.body) == (200, b"hello\n")
    finally:
        store.stop()


# --- 1,000 aborted downloads from the real store --------------------------------------------

TOTAL_DOWNLOADS = 1000
CONCURRENCY = 25
WARM_UP = 250


async def abort_download(port: int, path: str) -> bool:
    """A GET whose client leaves after the first 40 KB: True if it saw a 200 start."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        received = b""
        while len(received) < 40_000:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            received += data
        return received.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def abort_many(port: int, path: str, count: int) -> int:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> bool:
        async with slots:
            return await abort_download(port, path)

    return sum(await asyncio.gather(*(one() for _ in range(count))))


def settle(gateway: GatewayThread) -> None:
    wait_for_no_streams(gateway)
    gc.collect()


@pytest.mark.slow
def test_a_thousand_aborted_downloads_leave_no_descriptor(
    s3_store: S3Store,
    make_gateway: MakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)  # none may be logged, and records would pile up
    s3_store.put("large/aborted.bin", bytes(1024 * 1024), content_type="video/mp4")
    gateway = make_gateway(route(s3_store, s3_store.reader, monkeypatch))
    path = "/s3/large/aborted.bin"
    # Warm up: the allocator's arenas grow over the first few hundred streams, then stay.
    assert asyncio.run(abort_many(gateway.port, path, WARM_UP)) == WARM_UP
    settle(gateway)
    fds_before, rss_before, objects_before = open_fds(), rss_bytes(), len(gc.get_objects())
    started = time.monotonic()
    assert asyncio.run(abort_many(gateway.port, path, TOTAL_DOWNLOADS)) == TOTAL_DOWNLOADS
    elapsed_s = time.monotonic() - started
    settle(gateway)
    deadline = time.monotonic() + 5
    while open_fds() > fds_before and time.monotonic() < deadline:
        time.sleep(0.05)  # the store's side of a cut connection may close a moment later
    assert open_fds() == fds_before
    assert not caplog.records
    assert len(gc.get_objects()) - objects_before < OBJECT_TOLERANCE
    assert rss_bytes() - rss_before < RSS_TOLERANCE_BYTES, (rss_before, rss_bytes())
    print(
        f"{TOTAL_DOWNLOADS} aborted downloads in {elapsed_s:.1f} s; fds {fds_before} -> "
        f"{open_fds()}"
    )


# --- a large object, bounded memory ----------------------------------------------------------

LARGE_BYTES = 1024 * 1024 * 1024


def peak_rss_while(action: Callable[[], None]) -> int:
    """The highest RSS of this process (gateway and client) while ``action`` runs."""
    peak = rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, rss_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return peak


@pytest.mark.slow
def test_a_large_object_streams_in_bounded_memory(
    s3_store: S3Store, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryFile() as data:  # sparse: the test holds none of it either
        data.truncate(LARGE_BYTES)
        s3_store.client().upload_fileobj(data, s3_store.bucket, "large/object.bin")
    gateway = make_gateway(route(s3_store, s3_store.reader, monkeypatch))
    received = 0

    def download() -> None:
        nonlocal received
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
            sock.sendall(
                b"GET /s3/large/object.bin HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            )
            while data := sock.recv(256 * 1024):
                received += len(data)

    gc.collect()
    before = rss_bytes()
    peak = peak_rss_while(download)
    assert received > LARGE_BYTES
    # Holding the body would cost 1 GiB; the relay holds one chunk (at most 1 MiB) at a time.
    assert peak - before < 24 * 1024 * 1024, (before, peak)
