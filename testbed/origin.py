"""A real HTTP/1.1 origin on loopback for the proxy tests and benchmarks, good and bad.

Written on plain asyncio streams, not a framework, so that it can misbehave the ways origins
do: die in the middle of a body, stall before or after its headers, frame a body by closing,
send a malformed status line. It keeps connections alive like a real origin and counts them,
so tests can prove reuse and prove that the gateway closed what it should have.

Endpoints (GET and HEAD unless noted; numbers are query parameters; the first path segment
picks the endpoint, so /echo/a/b is /echo):
    /bytes?n=N[&framing=length|chunked|close][&chunk=K][&interval=S][&type=T]
           [&cc=CACHE_CONTROL][&vary=V][&etag=none|weak][&ranges=ignore][&lm=EPOCH_S]
        N bytes of ``pattern`` (deterministic, never all in memory); honours one-range Range
        (206/416, unless ranges=ignore) and If-None-Match on its ETag (304); cc and vary set
        Cache-Control and Vary; etag=none sends no ETag, etag=weak a weak one; lm sends
        Last-Modified (EPOCH_S + version) and honours If-Modified-Since (304). The body,
        ETag and Last-Modified follow ``Origin.version`` (a test bumps it: the object changed
        at the origin)
    /endless[?chunk=K][&interval=S]          chunked, forever
    /stall?after=N                           headers (Content-Length N+1), N bytes, silence
    /stall?headers=0                         silence before any header
    /die?n=N&after=M[&framing=chunked]       declares N bytes (or chunked), sends M, closes
    /malformed                               a response that is not HTTP
    /upload[?rate=BYTES_PER_S] (any method)  reads the body at that rate; answers its length
                                             and SHA-256 as JSON
    /echo (any method)                       the request as JSON: method, target, headers,
                                             body length
    /hop                                     hop-by-hop response fields, and some that are not
    /redirect?to=URL[&status=302]            a redirect to URL
    /gzip                                    a gzip body with Content-Encoding: gzip
    /notype                                  a body without Content-Type
    /status?code=N[&reason=R]                status N with a short body (none for 204/304)
    /length?cl=V[&cl=V...][&body=B]          body B (default "hello") under one Content-Length
                                             line per ``cl``, each value sent as given
                                             (percent-decoded as Latin-1, so %B2 is byte 0xB2)
    /_stats                                  {"accepted", "open", "requests"} as JSON
    /admin/secret.txt, /base/hello.txt, /secret.txt
                                             small files, found the way ``python3 -m
                                             http.server`` and most frameworks read a path:
                                             percent-decoded, then dot and empty segments
                                             resolved (/base/..%2fsecret.txt is /secret.txt)
Any endpoint takes ``hang_up_next=1``: the connection's next request is read, then the
connection closed unanswered (an origin whose keep-alive timeout fires as a request arrives).

Run standalone (for benchmarks): ``python -m testbed.origin [--port P]``; it prints
``origin listening on PORT`` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import gzip
import hashlib
import json
import posixpath
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

PATTERN_PERIOD = (1 << 20) + 13  # a prime-ish period: chunk boundaries never line up with it
_PATTERN = random.Random(20240601).randbytes(PATTERN_PERIOD)
_PATTERN_TWICE = _PATTERN + _PATTERN
WRITE_BYTES = 256 * 1024
READ_BYTES = 64 * 1024
GZIP_PLAIN = b"mediaproxy passes gzip bodies through undecoded.\n" * 200
GZIP_BODY = gzip.compress(GZIP_PLAIN, mtime=0)
ORIGIN_SERVER = "origin/1"
ORIGIN_DATE = "Thu, 01 Jan 2015 00:00:00 GMT"  # fixed, so a test can tell it from the gateway's
FILES = {
    "/admin/secret.txt": b"admin secret\n",
    "/base/hello.txt": b"hello\n",
    "/secret.txt": b"top secret\n",
}
HOP_RESPONSE_HEADERS = [
    ("Connection", "X-Hop-Secret, keep-alive"),
    ("X-Hop-Secret", "1"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Authenticate", "Basic"),
    ("Trailer", "X-Checksum"),
    ("Upgrade", "h2c"),
    ("X-End", "kept"),
    ("Set-Cookie", "a=1"),
    ("Set-Cookie", "b=2"),
    ("Via", "1.1 origin"),
    ("Content-Type", "text/plain"),
]


_CACHE_FIELDS = (("cc", "Cache-Control"), ("vary", "Vary"))


def _not_modified_since(since: str, modified_s: int) -> bool:
    try:
        return modified_s <= email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False


def pattern(offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of an endless deterministic stream."""
    out = bytearray()
    while length > 0:
        start = offset % PATTERN_PERIOD
        take = min(length, PATTERN_PERIOD)
        out += _PATTERN_TWICE[start : start + take]
        offset += take
        length -= take
    return bytes(out)


def pattern_sha256(length: int, offset: int = 0) -> str:
    digest = hashlib.sha256()
    for position in range(offset, offset + length, 4 << 20):
        digest.update(pattern(position, min(4 << 20, offset + length - position)))
    return digest.hexdigest()


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)

    def header(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default

    def number(self, key: str, default: float) -> float:
        return float(self.query.get(key, default))


class ConnectionDone(Exception):
    """This connection must close after the current response (or has already failed)."""


class Origin:
    """The origin's protocol handling; one ``serve`` coroutine per connection."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self.targets: list[str] = []  # every request-target received, in order
        # Every /bytes response: (target, Range asked, status, body bytes sent), and the total.
        self.served: list[list[Any]] = []
        self.body_bytes = 0
        self.version = 0  # /bytes content and ETag: bump it to change the object
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", port)
        sockets = self.server.sockets
        return int(sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self._writers.add(writer)
        hang_up = False
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                request = _parse_head(head)
                self.requests += 1
                self.targets.append(request.target)
                if hang_up:
                    return
                hang_up = "hang_up_next" in request.query
                await self.respond(request, reader, writer)
                if request.header("Connection").lower() == "close" or request.version != "HTTP/1.1":
                    return
        except (ConnectionDone, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        """Stop listening and drop every connection (each handler then ends on its own)."""
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for _ in range(100):
            if not self.open:
                return
            await asyncio.sleep(0.01)

    async def respond(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path = "/" + request.path.split("/")[1]  # "/echo/a/b" is /echo too
        if path in ("/upload", "/echo"):
            await self._read_body_and_answer(request, reader, writer)
            return
        await _discard_body(request, reader)
        served = as_most_origins_read(request.path)
        if served in FILES:
            await _send_simple(
                request, writer, 200, FILES[served], [("Content-Type", "text/plain")]
            )
        elif path == "/bytes":
            await self._bytes(request, writer)
        elif path == "/endless":
            await self._endless(request, writer)
        elif path == "/stall":
            await self._stall(request, reader, writer)
        elif path == "/die":
            await self._die(request, writer)
        elif path == "/malformed":
            writer.write(b"HTTP/1.1 two hundred OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            raise ConnectionDone
        elif path == "/bigheader":
            # One field of ?bytes=N octets in an otherwise ordinary response.
            size = int(request.number("bytes", 0))
            await _send_simple(request, writer, 200, b"ok", [("X-Big", "b" * size)])
        elif path == "/interim":
            # Two interim responses, then a chunked body with a trailer field.
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                b"6\r\nafter \r\n8;ext=1\r\ninterims\r\n0\r\nX-Sum: 14\r\n\r\n"
            )
            await writer.drain()
        elif path == "/redirect":
            status = int(request.number("status", 302))
            await _send_simple(
                request, writer, status, b"", [("Location", request.query.get("to", "/"))]
            )
        elif path == "/gzip":
            await _send_simple(
                request,
                writer,
                200,
                GZIP_BODY,
                [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
            )
        elif path == "/hop":
            await _send_simple(request, writer, 200, b"hop\n", HOP_RESPONSE_HEADERS)
        elif path == "/notype":
            await _send_simple(request, writer, 200, b"no type here\n", [])
        elif path == "/status":
            code = int(request.number("code", 200))
            body = b"" if code in (204, 304) else f"status {code}\n".encode()
            await _send_simple(
                request,
                writer,
                code,
                body,
                [("Content-Type", "text/plain")],
                reason=request.query.get("reason"),
            )
        elif path == "/length":
            await self._length(request, writer)
        elif path == "/_stats":
            stats = {
                "accepted": self.accepted,
                "open": self.open,
                "requests": self.requests,
                "body_bytes": self.body_bytes,
            }
            await _send_simple(
                request,
                writer,
                200,
                json.dumps(stats).encode(),
                [("Content-Type", "application/json")],
            )
        else:
            await _send_simple(
                request, writer, 404, b"no such endpoint\n", [("Content-Type", "text/plain")]
            )

    async def _bytes(self, request: Request, writer: asyncio.StreamWriter) -> None:
        size = int(request.number("n", 0))
        framing = request.query.get("framing", "length")
        version = self.version
        etag = f'"bytes-{size}"' if not version else f'"bytes-{size}-v{version}"'
        headers = [
            ("Accept-Ranges", "bytes"),
            ("Content-Type", request.query.get("type", "application/octet-stream")),
        ]
        etag_kind = request.query.get("etag")
        if etag_kind != "none":
            headers.append(("ETag", "W/" + etag if etag_kind == "weak" else etag))
        headers += [
            (name, request.query[key]) for key, name in _CACHE_FIELDS if key in request.query
        ]
        modified_s = int(request.number("lm", -1))
        if modified_s >= 0:
            modified_s += version
            headers.append(("Last-Modified", email.utils.formatdate(modified_s, usegmt=True)))
        if request.header("If-None-Match") == etag or (
            modified_s >= 0
            and not request.header("If-None-Match")
            and _not_modified_since(request.header("If-Modified-Since"), modified_s)
        ):
            self.served.append([request.target, request.header("Range"), 304, 0])
            await _send_simple(request, writer, 304, b"", headers)
            return
        status, start, length = 200, 0, size
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.header("Range"))
        if match and request.query.get("ranges") != "ignore":
            first = int(match[1])
            last = min(int(match[2]) if match[2] else size - 1, size - 1)
            if first >= size or last < first:
                await _send_simple(
                    request, writer, 416, b"", [("Content-Range", f"bytes */{size}")]
                )
                return
            status, start, length = 206, first, last - first + 1
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        chunk = int(request.number("chunk", WRITE_BYTES))
        interval = request.number("interval", 0)
        record = [request.target, request.header("Range"), status, 0]
        self.served.append(record)  # its count grows as the body goes
        body = self._counted(_pattern_chunks(start + version, length, chunk), record)
        await _send_streamed(request, writer, status, headers, framing, length, body, interval)

    def _counted(self, chunks: Iterable[bytes], record: list[Any]) -> Iterator[bytes]:
        for data in chunks:
            self.body_bytes += len(data)
            record[3] += len(data)
            yield data

    async def _length(self, request: Request, writer: asyncio.StreamWriter) -> None:
        fields = parse_qsl(
            urlsplit(request.target).query, keep_blank_values=True, encoding="latin-1"
        )
        body = dict(fields).get("body", "hello").encode("latin-1")
        headers = [("Content-Type", "text/plain")]
        headers += [("Content-Length", value) for key, value in fields if key == "cl"]
        writer.write(_head(200, headers))
        if request.method != "HEAD":
            writer.write(body)
        await writer.drain()

    async def _endless(self, request: Request, writer: asyncio.StreamWriter) -> None:
        chunk = int(request.number("chunk", 16 * 1024))
        interval = request.number("interval", 0.01)

        def forever() -> Iterator[bytes]:
            offset = 0
            while True:
                yield pattern(offset, chunk)
                offset += chunk

        await _send_streamed(
            request,
            writer,
            200,
            [("Content-Type", "application/octet-stream")],
            "chunked",
            None,
            forever(),
            interval,
        )

    async def _stall(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if request.query.get("headers", "1") != "0":
            after = int(request.number("after", 0))
            writer.write(_head(200, [("Content-Length", str(after + 1))]) + pattern(0, after))
            await writer.drain()
        await reader.read(1)  # until the gateway closes the connection (or sends anything)
        raise ConnectionDone

    async def _die(self, request: Request, writer: asyncio.StreamWriter) -> None:
        size = int(request.number("n", 1 << 20))
        after = int(request.number("after", size // 2))
        framing = request.query.get("framing", "length")
        await _send_streamed(
            request,
            writer,
            200,
            [],
            framing,
            size,
            _pattern_chunks(0, after, WRITE_BYTES),
            0,
            complete=False,
        )
        raise ConnectionDone  # before the rest of the body, or the last chunk

    async def _read_body_and_answer(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        rate = request.number("rate", 0)
        digest = hashlib.sha256()
        received = 0
        started = time.monotonic()
        async for data in _body(request, reader):
            digest.update(data)
            received += len(data)
            if rate:
                await asyncio.sleep(max(0.0, started + received / rate - time.monotonic()))
        if request.path.startswith("/upload"):
            answer = {"bytes": received, "sha256": digest.hexdigest()}
        else:
            answer = {
                "method": request.method,
                "target": request.target,
                "version": request.version,
                "headers": request.headers,
                "body_bytes": received,
            }
        await _send_simple(
            request,
            writer,
            200,
            json.dumps(answer).encode(),
            [("Content-Type", "application/json")],
        )


def as_most_origins_read(path: str) -> str:
    """The file a path names for ``python3 -m http.server`` (its translate_path): decoded
    once, dot segments resolved, empty ones dropped."""
    words = posixpath.normpath(unquote(path)).split("/")
    return "/" + "/".join(word for word in words if word not in ("", ".", ".."))


def _pattern_chunks(start: int, length: int, chunk: int) -> Iterator[bytes]:
    for offset in range(start, start + length, chunk):
        yield pattern(offset, min(chunk, start + length - offset))


def _parse_head(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    parts = urlsplit(target)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    return Request(method, target, version, headers, parts.path, query)


async def _body(request: Request, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The request body, as it arrives, by Content-Length or chunked framing."""
    if request.header("Transfer-Encoding").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            async for data in _pieces(reader, size):
                yield data
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # the empty trailer section
    else:
        async for data in _pieces(reader, int(request.header("Content-Length", "0"))):
            yield data


async def _pieces(reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes, as they arrive."""
    while size:
        data = await reader.read(min(size, READ_BYTES))
        if not data:
            raise asyncio.IncompleteReadError(b"", size)
        size -= len(data)
        yield data


async def _discard_body(request: Request, reader: asyncio.StreamReader) -> None:
    async for _ in _body(request, reader):
        pass


def _head(status: int, headers: list[tuple[str, str]], reason: str | None = None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Whatever')}",
        f"Server: {ORIGIN_SERVER}",
        f"Date: {ORIGIN_DATE}",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    404: "Not Found",
    416: "Range Not Satisfiable",
}


async def _send_simple(
    request: Request,
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    headers: list[tuple[str, str]],
    reason: str | None = None,
) -> None:
    if status not in (204, 304):
        headers = headers + [("Content-Length", str(len(body)))]
    writer.write(_head(status, headers, reason))
    if request.method != "HEAD":
        writer.write(body)
    await writer.drain()


async def _send_streamed(
    request: Request,
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
    framing: str,
    length: int | None,
    chunks: Iterable[bytes],
    interval: float,
    complete: bool = True,
) -> None:
    """Headers, then each chunk as the socket takes it (``interval`` seconds apart).

    ``complete=False`` leaves out the last chunk of a chunked body (a cut stream).
    """
    if framing == "chunked":
        headers = headers + [("Transfer-Encoding", "chunked")]
    elif framing == "close":
        headers = headers + [("Connection", "close")]
    else:
        headers = headers + [("Content-Length", str(length))]
    writer.write(_head(status, headers))
    await writer.drain()
    if request.method == "HEAD":
        return
    for data in chunks:
        writer.write(b"%x\r\n%b\r\n" % (len(data), data) if framing == "chunked" else data)
        await writer.drain()
        if interval:
            await asyncio.sleep(interval)
    if framing == "chunked" and complete:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    elif framing == "close":
        raise ConnectionDone


class OriginThread:
    """An Origin on an ephemeral loopback port, served by its own event loop in a thread."""

    def __init__(self) -> None:
        self.origin = Origin()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="origin", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("origin did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.port = self._loop.run_until_complete(self.origin.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def open_connections(self) -> int:
        return self.origin.open

    @property
    def accepted(self) -> int:
        return self.origin.accepted

    def wait_for_open(self, count: int, timeout_s: float = 5.0) -> float:
        """Wait until exactly ``count`` connections are open; the seconds it took."""
        started = time.monotonic()
        while self.origin.open != count and time.monotonic() - started < timeout_s:
            time.sleep(0.005)
        assert self.origin.open == count, f"{self.origin.open} origin connections open"
        return time.monotonic() - started

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.origin.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    port = parser.parse_args().port

    async def serve() -> None:
        origin = Origin()
        print(f"origin listening on {await origin.start(port)}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
