"""Clients that tests and the benchmarks share: raw sockets, nothing between them and the bytes."""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass, field

# What one read takes from a socket: small enough that a pass over every socket stays short.
_READ_BYTES = 256 * 1024


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    head: bytes = b""
    in_body: bool = False
    position: int = 0  # body bytes received
    same: bool = True  # every body byte so far is the expected one
    first_at: float | None = None
    scratch: bytearray = field(default_factory=lambda: bytearray(_READ_BYTES))


@dataclass(frozen=True)
class Batch:
    """What a batch of clients got (times from ``time.perf_counter``)."""

    asked_at: float  # when the requests went out
    done_at: float  # when the last body ended
    first_bytes_at: list[float]  # when each client's first body byte came
    identical: bool  # every body was exactly the expected bytes

    @property
    def first_byte_spread_s(self) -> float:
        return max(self.first_bytes_at) - min(self.first_bytes_at)


def first_bytes_at_once(
    port: int, target: str, clients: int, expected: bytes, timeout_s: float = 120
) -> Batch:
    """``clients`` GETs of ``target`` sent at the same moment, each on a raw socket connected
    beforehand; each body compared with ``expected``.

    One thread serves every socket through a selector and compares bytes (a memcmp) instead of
    hashing them: a client's own work can delay another's first byte by one short pass over
    the sockets at most. (Threads each hashing their body delay each other's first bytes by
    much more: the time a timestamp waits for the interpreter lock behind the others.)"""
    selector = selectors.DefaultSelector()
    states = [
        _Client(socket.create_connection(("127.0.0.1", port), timeout=timeout_s))
        for _ in range(clients)
    ]
    try:
        time.sleep(0.5)  # every connection accepted before anybody asks
        wanted = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        asked_at = time.perf_counter()
        for state in states:
            state.sock.sendall(wanted)
            state.sock.setblocking(False)
            selector.register(state.sock, selectors.EVENT_READ, state)
        deadline = time.monotonic() + timeout_s
        open_count = clients
        while open_count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{open_count} of {clients} bodies not done in {timeout_s} s")
            for key, _ in selector.select(timeout=1):
                state = key.data
                if not _read(state, expected):
                    selector.unregister(state.sock)
                    open_count -= 1
        done_at = time.perf_counter()
    finally:
        selector.close()
        for state in states:
            state.sock.close()
    return Batch(
        asked_at=asked_at,
        done_at=done_at,
        first_bytes_at=[state.first_at or float("inf") for state in states],
        identical=all(state.same and state.position == len(expected) for state in states),
    )


def _read(state: _Client, expected: bytes) -> bool:
    """Take what the socket has; False once it is closed."""
    try:
        count = state.sock.recv_into(state.scratch)
    except BlockingIOError:
        return True
    if not count:
        return False
    data = memoryview(state.scratch)[:count]
    if not state.in_body:
        state.head += data
        head, separator, body = state.head.partition(b"\r\n\r\n")
        if not separator:
            return True
        state.in_body = True
        data = memoryview(body)
    if data and state.first_at is None:
        state.first_at = time.perf_counter()
    end = state.position + len(data)
    state.same = state.same and bytes(data) == expected[state.position : end]
    state.position = end
    return True
