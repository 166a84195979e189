"""The cache's cold fill: many clients of one uncached object at once, through mediaproxy;
then as many again of the same object, now cached.

The origin is the test origin (testbed/origin.py) in a process of its own, as a real origin
would be: in this process it would take the interpreter lock from the client's thread and
delay the timestamps being measured. Its `/_stats` count of body bytes sent, read before and
after, is the issue's proof that each byte left the origin once. Each client opens its
connection first; then all ask at the same moment; each records when its first body byte came
and compares the whole body with the origin's bytes, all from one thread (testbed/clients.py:
threads hashing their bodies delayed each other's timestamps).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.clients import first_bytes_at_once  # noqa: E402
from testbed.origin import pattern  # noqa: E402

ORIGIN = Path(__file__).resolve().parent.parent / "testbed" / "origin.py"
_LISTENING = "origin listening on "


@contextlib.contextmanager
def test_origin() -> Iterator[int]:
    """The test origin as its own process, on a free loopback port (yielded); stopped on exit."""
    process = subprocess.Popen(
        [sys.executable, str(ORIGIN)], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(_LISTENING):
            raise RuntimeError(f"the test origin did not start: {line!r}")
        yield int(line[len(_LISTENING) :])
    finally:
        process.terminate()
        process.wait(10)


def origin_body_bytes(origin_port: int) -> int:
    """Every body byte the test origin on ``origin_port`` has sent since it started."""
    with urllib.request.urlopen(f"http://127.0.0.1:{origin_port}/_stats", timeout=10) as answer:
        return int(json.load(answer)["body_bytes"])


@dataclass(frozen=True)
class AtOnce:
    clients: int
    size_bytes: int
    origin_bytes: int  # what the origin sent in all
    first_byte_spread_s: float  # last client's first byte minus the first client's
    wall_s: float  # from the common start to the last client's last byte
    identical: bool  # every client got the origin's bytes


def at_once(port: int, origin_port: int, name: str, size_bytes: int, clients: int) -> AtOnce:
    """``clients`` GETs of ``/files/<name>?n=size`` at once through the gateway on ``port``
    (routed to the ``/bytes/`` of the test origin on ``origin_port``)."""
    before = origin_body_bytes(origin_port)
    batch = first_bytes_at_once(
        port, f"/files/{name}?n={size_bytes}", clients, pattern(0, size_bytes)
    )
    return AtOnce(
        clients=clients,
        size_bytes=size_bytes,
        origin_bytes=origin_body_bytes(origin_port) - before,
        first_byte_spread_s=batch.first_byte_spread_s,
        wall_s=batch.done_at - batch.asked_at,
        identical=batch.identical,
    )
