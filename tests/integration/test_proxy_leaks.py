"""Nothing leaks: after 1,000 proxied streams ended in every way that is not success, this
process's open file descriptors and RSS are back at their baseline, no stream is left
running, the origin has no connection left open, and the pool holds no broken connection."""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from mediaproxy.integrations.http_proxy.route import HttpProxyIntegration
from testbed.origin import OriginThread

from .support import (
    OBJECT_TOLERANCE,
    RSS_TOLERANCE_BYTES,
    GatewayThread,
    closed_port,
    open_fds,
    rss_bytes,
)

TOTAL_STREAMS = 1000
CONCURRENCY = 25


@dataclass(frozen=True)
class Ending:
    """One way for a proxied stream to end, and what the client must see when it does."""

    path: str
    looks_right: Callable[[bytes], bool]
    leave_after_bytes: int = 0  # the client hangs up after this many bytes (0: reads to EOF)


def cut_200(full_body_bytes: int) -> Callable[[bytes], bool]:
    def check(received: bytes) -> bool:
        head, _, body = received.partition(b"\r\n\r\n")
        return (
            head.startswith(b"HTTP/1.1 200")
            and len(body) < full_body_bytes
            and not body.endswith(b"\r\n0\r\n\r\n")
        )

    return check


def status(code: bytes) -> Callable[[bytes], bool]:
    return lambda received: received.startswith(b"HTTP/1.1 " + code)


ENDINGS = {
    "client_closed": Ending("/o/endless", status(b"200"), leave_after_bytes=40_000),
    "origin_died_length": Ending("/o/die?n=200000&after=50000", cut_200(200_000)),
    "origin_died_chunked": Ending("/o/die?n=200000&after=50000&framing=chunked", cut_200(200_000)),
    "malformed": Ending("/o/malformed", status(b"502")),
    "refused": Ending("/refused/x", status(b"502")),
    "idle_before_headers": Ending("/timed/stall?headers=0", status(b"504")),
    "idle_after_headers": Ending("/patient/stall?after=1000", cut_200(1001)),
}


async def run_one(port: int, ending: Ending) -> str | None:
    """None if the stream ended as ``ending`` says it must; else what the client saw."""
    received = b""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {ending.path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
        )
        while data := await asyncio.wait_for(reader.read(65536), 10):
            received += data
            if ending.leave_after_bytes and len(received) >= ending.leave_after_bytes:
                break
        return None if ending.looks_right(received) else _seen(received)
    except ConnectionResetError:
        return None if ending.leave_after_bytes > 0 else f"reset after {_seen(received)}"
    finally:
        writer.close()


def _seen(received: bytes) -> str:
    """A failed stream as a line: its status line and how many bytes came."""
    status_line = received.partition(b"\r\n")[0]
    return f"{status_line!r}, {len(received)} bytes"


async def run_all(port: int, per_ending: int) -> dict[str, list[str]]:
    """Run ``per_ending`` streams of every ending, CONCURRENCY at a time; what each ending's
    failed streams saw."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(ending: Ending) -> str | None:
        async with slots:
            return await run_one(port, ending)

    failures = {}
    for name, ending in ENDINGS.items():
        results = await asyncio.gather(*(one(ending) for _ in range(per_ending)))
        failures[name] = [seen for seen in results if seen is not None]
    return failures


def settle(gateway: GatewayThread, origin: OriginThread) -> None:
    deadline = time.monotonic() + 10
    while (gateway.active_streams() or origin.open_connections) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.active_streams() == 0
    assert origin.open_connections == 0
    gc.collect()


@pytest.mark.slow
def test_a_thousand_failed_streams_leak_nothing(
    make_gateway,  # type: ignore[no-untyped-def]
    origin: OriginThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Only errors are recorded (and there must be none): captured records would pile up.
    caplog.set_level(logging.ERROR)
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/o"
        integration = "http_proxy"
        upstream = "{origin.url}"
        [[routes]]
        # Only the stall before any header meets this short timer: on a loaded machine a
        # malformed response could take longer than it to arrive, and be a 504, not its 502.
        prefix = "/timed"
        integration = "http_proxy"
        upstream = "{origin.url}"
        idle_timeout = 0.3
        [[routes]]
        # A stall after the headers needs them to come first: on a loaded machine they took
        # longer than the short timer above (a 504 where the cut 200 is expected).
        prefix = "/patient"
        integration = "http_proxy"
        upstream = "{origin.url}"
        idle_timeout = 1
        [[routes]]
        prefix = "/refused"
        integration = "http_proxy"
        upstream = "http://127.0.0.1:{closed_port()}/"
    """)
    # Warm up: the first streams create what lives for the whole process (resolver threads,
    # tornado's and asyncio's caches); the baseline is taken after them.
    assert not any(asyncio.run(run_all(gateway.port, CONCURRENCY)).values())
    settle(gateway, origin)
    fds_before, rss_before, objects_before = open_fds(), rss_bytes(), len(gc.get_objects())

    started = time.monotonic()
    failures = asyncio.run(run_all(gateway.port, TOTAL_STREAMS // len(ENDINGS) + 1))
    elapsed_s = time.monotonic() - started
    assert not any(failures.values()), {
        name: collections.Counter(seen) for name, seen in failures.items() if seen
    }
    settle(gateway, origin)

    assert open_fds() == fds_before
    assert len(gc.get_objects()) - objects_before < OBJECT_TOLERANCE
    assert not caplog.records
    assert rss_bytes() - rss_before < RSS_TOLERANCE_BYTES, (rss_before, rss_bytes())
    proxies = [
        i
        for i in gateway.running.gateway.integrations  # type: ignore[union-attr]
        if isinstance(i, HttpProxyIntegration)
    ]
    assert gateway.call(lambda: sum(p.pool.idle_count for p in proxies)) == 0
    print(
        f"{TOTAL_STREAMS} failed streams in {elapsed_s:.1f} s; fds {fds_before} -> "
        f"{open_fds()}, RSS {rss_before / 2**20:.1f} -> {rss_bytes() / 2**20:.1f} MiB, "
        f"objects {objects_before} -> {len(gc.get_objects())}"
    )
