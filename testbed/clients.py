"""Clients that tests and the benchmarks share: raw sockets, nothing between them and the bytes."""

from __future__ import annotations

import hashlib
import socket
import threading
import time


def first_byte_and_digest(
    port: int, target: str, started: threading.Event, timeout_s: float = 60
) -> tuple[float, str]:
    """GET ``target`` on a raw socket once ``started`` is set: when its first body byte came
    (``time.perf_counter``), and the body's SHA-256."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        started.wait(30)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
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
