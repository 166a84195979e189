"""The cache's cold fill: many clients of one uncached object at once, through mediaproxy.

The origin is the test origin (testbed/origin.py), run in this process so that the bytes it
sent can be read from it afterwards: the issue's proof that each byte left the origin once.
Each client opens its connection first; then all ask at the same moment; each records when
its first body byte came and hashes the whole body.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.origin import OriginThread, pattern_sha256  # noqa: E402


@dataclass(frozen=True)
class ColdFill:
    clients: int
    size_bytes: int
    origin_bytes: int  # what the origin sent in all
    first_byte_spread_s: float  # last client's first byte minus the first client's
    wall_s: float  # from the common start to the last client's last byte
    identical: bool  # every client got the origin's bytes


def _fetch(port: int, target: str, go: threading.Event) -> tuple[float, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        go.wait(30)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        body = data.partition(b"\r\n\r\n")[2]
        while not body:
            body = sock.recv(65536)
        first_at = time.perf_counter()
        digest = hashlib.sha256(body)
        while piece := sock.recv(1 << 20):
            digest.update(piece)
        return first_at, digest.hexdigest()


def cold_fill(port: int, origin: OriginThread, size_bytes: int, clients: int) -> ColdFill:
    """``clients`` GETs of ``/files/cold.bin?n=size`` at once through the gateway on ``port``
    (routed to the origin's ``/bytes/``)."""
    before = origin.origin.body_bytes
    go = threading.Event()
    with ThreadPoolExecutor(clients) as pool:
        futures = [
            pool.submit(_fetch, port, f"/files/cold.bin?n={size_bytes}", go) for _ in range(clients)
        ]
        time.sleep(0.5)  # every client connected
        started = time.perf_counter()
        go.set()
        results = [future.result() for future in futures]
    wall_s = time.perf_counter() - started
    firsts = sorted(at for at, _ in results)
    expected = pattern_sha256(size_bytes)
    return ColdFill(
        clients=clients,
        size_bytes=size_bytes,
        origin_bytes=origin.origin.body_bytes - before,
        first_byte_spread_s=firsts[-1] - firsts[0],
        wall_s=wall_s,
        identical=all(digest == expected for _, digest in results),
    )
