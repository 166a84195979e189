"""The cache's cold fill: many clients of one uncached object at once, through mediaproxy.

The origin is the test origin (testbed/origin.py), run in this process so that the bytes it
sent can be read from it afterwards: the issue's proof that each byte left the origin once.
Each client opens its connection first; then all ask at the same moment; each records when
its first body byte came and compares the whole body with the origin's bytes, all from one
thread (testbed/clients.py: threads hashing their bodies delayed each other's timestamps).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.clients import first_bytes_at_once  # noqa: E402
from testbed.origin import OriginThread, pattern  # noqa: E402


@dataclass(frozen=True)
class ColdFill:
    clients: int
    size_bytes: int
    origin_bytes: int  # what the origin sent in all
    first_byte_spread_s: float  # last client's first byte minus the first client's
    wall_s: float  # from the common start to the last client's last byte
    identical: bool  # every client got the origin's bytes


def cold_fill(port: int, origin: OriginThread, size_bytes: int, clients: int) -> ColdFill:
    """``clients`` GETs of ``/files/cold.bin?n=size`` at once through the gateway on ``port``
    (routed to the origin's ``/bytes/``)."""
    before = origin.origin.body_bytes
    batch = first_bytes_at_once(
        port, f"/files/cold.bin?n={size_bytes}", clients, pattern(0, size_bytes)
    )
    return ColdFill(
        clients=clients,
        size_bytes=size_bytes,
        origin_bytes=origin.origin.body_bytes - before,
        first_byte_spread_s=batch.first_byte_spread_s,
        wall_s=batch.done_at - batch.asked_at,
        identical=batch.identical,
    )
