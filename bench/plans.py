"""What a usage plan's rate and quota checks add to a request, with Redis on loopback.

Run from the repository root (``make bench`` runs it):

    .venv/bin/python bench/plans.py [--requests N]

One gateway (in this process, on its own loop thread) serves one small file on two routes
that differ only in the key a request presents: one key is on a plan with a rate and a daily
quota kept in a throwaway ``redis-server`` on loopback (testbed/redisserver.py), the other on
no plan (the baseline). One client on a kept-alive connection alternates blocks of the two, so
the machine's noise falls on both alike; the figure is the difference of the medians, both
measured in this run and printed with the load average. The target (bench/TARGETS.md) is
<= 0.3 ms. It also counts the commands Redis ran per planned request (INFO commandstats: the
admission script, and each end's script, sent batched after the response) and times the
admission check alone (``PlanGuard.admit``, one Lua script: the round trip to Redis) on the
gateway's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import socket
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaproxy import config as config_module  # noqa: E402
from mediaproxy.config import ACCESS_LOG_OFF  # noqa: E402
from testbed.gateway import GatewayThread  # noqa: E402
from testbed.redisserver import throwaway_redis  # noqa: E402


def timed_gets(port: int, key: str, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", "/files/small.txt", headers={"X-API-Key": key})
        reply = connection.getresponse()
        reply.read()
        times.append(time.perf_counter() - started)
        assert reply.status == 200, reply.status
    connection.close()
    return times


def redis_calls(port: int) -> dict[str, int]:
    """Calls per command so far, from INFO commandstats (one bulk string reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, body = data.split(b"\r\n", 1)
        while len(body) < int(head[1:]):
            body += sock.recv(65536)
    calls = {}
    for line in body.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_") :].split(":", 1)
            calls[name] = int(fields.split(",")[0].split("=")[1])
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per key (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, throwaway_redis() as redis:
        root = Path(folder)
        (root / "small.txt").write_bytes(b"x" * 1024)
        path = root / "bench.toml"
        path.write_text(
            textwrap.dedent(f"""
            [shared_state]
            redis_url = "{redis.url}"
            [[routes]]
            prefix = "/files"
            integration = "file"
            root = "{root}"
            api_keys = ["planned", "unplanned"]
            [[plans]]
            name = "bench"
            keys = ["planned"]
            requests_per_second = 1000000
            burst = 1000000
            bytes_per_day = 1000000000000
        """)
        )
        loaded = config_module.load(path)
        loaded = replace(loaded, server=replace(loaded.server, port=0, access_log=ACCESS_LOG_OFF))
        gateway = GatewayThread(loaded)
        try:
            timed_gets(gateway.port, "planned", 200)  # connections up, scripts loaded
            planned: list[float] = []
            unplanned: list[float] = []
            block = 50  # small blocks: a change of load meanwhile falls on both alike
            load_before = os.getloadavg()[0]
            calls_before = redis_calls(redis.port)
            for _ in range(args.requests // block):
                planned += timed_gets(gateway.port, "planned", block)
                unplanned += timed_gets(gateway.port, "unplanned", block)
            time.sleep(0.2)  # the last ends, sent batched
            calls = redis_calls(redis.port)
            commands = {name: count - calls_before.get(name, 0) for name, count in calls.items()}
            commands.pop("info", None)
            load_after = os.getloadavg()[0]
            assert gateway.running is not None
            guard = gateway.running.gateway.plans
            assert guard is not None
            key = guard.plan_for("planned")
            assert key is not None

            async def checks() -> list[float]:
                assert guard is not None and key is not None
                times = []
                for _ in range(2000):
                    started = time.perf_counter()
                    usage = await guard.admit(key)
                    times.append(time.perf_counter() - started)
                    usage.end()
                return times

            loop = gateway._loop  # the gateway's own loop: the guard's Redis client lives there
            alone = asyncio.run_coroutine_threadsafe(checks(), loop).result(60)
        finally:
            gateway.stop()
    added_ms = (statistics.median(planned) - statistics.median(unplanned)) * 1000
    print(f"requests per key: {len(planned)}; load average {load_before:.2f} -> {load_after:.2f}")
    print(f"median GET, key on a plan (Redis):  {statistics.median(planned) * 1000:.3f} ms")
    print(f"median GET, key on no plan:         {statistics.median(unplanned) * 1000:.3f} ms")
    print(f"added by the plan (median diff):    {added_ms:.3f} ms  (target <= 0.3 ms)")
    per_request = ", ".join(
        f"{name} {count / len(planned):.2f}" for name, count in sorted(commands.items()) if count
    )
    print(f"Redis commands per planned request: {per_request}")
    print(f"admission check alone, median:      {statistics.median(alone) * 1000:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
