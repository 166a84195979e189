"""A fleet: gateway commands with `processes = 2`, several of them on one Redis."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mediaproxy.server.workers import MIN_UPTIME_S

from .support import Server, make_sparse_file, request


def instance_config(
    tmp_path: Path, name: str, redis_url: str, plan: str, shared_state: str = ""
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[server]
port = 0
processes = 2
access_log = "off"
status_page = false
[shared_state]
redis_url = "{redis_url}"
{shared_state}
[[routes]]
prefix = "/files"
integration = "file"
root = "{tmp_path}"
api_keys = ["fleet-key"]
[[plans]]
name = "fleet"
keys = ["fleet-key"]
{plan}
""")
    return path


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.close()


@pytest.mark.slow
def test_1000_requests_over_two_instances_of_two_workers_admit_exactly_100(
    tmp_path: Path, redis_url: str, servers: list[Server]
) -> None:
    (tmp_path / "small.txt").write_text("small\n")
    # 100 at once, then one every ~3 hours: exactly 100 within this test.
    plan = "requests_per_second = 0.0001\nburst = 100"
    # The policy under test is exactness, not an outage: a loaded test machine may take longer
    # than the default timeout for a call (and "allow" would then admit uncounted).
    for name in ("a", "b"):
        servers.append(Server(instance_config(tmp_path, name, redis_url, plan, "timeout = 5")))
    ports = [server.port for server in servers]

    def one(index: int) -> int:
        return request(
            ports[index % 2], "GET", "/files/small.txt", headers={"X-API-Key": "fleet-key"}
        ).status

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(1000)))
    assert (statuses.count(200), statuses.count(429)) == (100, 900), [
        line for server in servers for line in server.lines if "shared state" in line
    ]


def status_of(sock: socket.socket) -> int:
    sock.settimeout(10)
    return int(sock.recv(4096).split(b" ", 2)[1])


def stalled(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\nX-API-Key: fleet-key\r\n\r\n")
    return sock


@pytest.mark.slow
def test_a_killed_workers_leases_return_within_the_lease_time(
    tmp_path: Path, redis_url: str, servers: list[Server]
) -> None:
    make_sparse_file(tmp_path / "big.bin", 64 * 1024 * 1024)
    lease_s = 2.0
    servers.append(
        Server(
            instance_config(
                tmp_path, "a", redis_url, "max_concurrent_streams = 1", f"lease = {lease_s}"
            )
        )
    )
    server = servers[0]
    holder = stalled(server.port)
    assert status_of(holder) == 200
    # Held past several renewals: the lease outlives its first term while the stream runs.
    time.sleep(lease_s * 1.5)
    for _ in range(4):  # whichever worker each lands on, the cap is the key's
        refused = stalled(server.port)
        assert status_of(refused) == 429
        refused.close()
    time.sleep(max(0.0, MIN_UPTIME_S + 0.2 - (time.monotonic() - server.started_at)))
    for pid in server.worker_pids:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    holder.close()
    server.wait_for_line(r"restarting it(.|\n)*restarting it")
    while True:
        again = stalled(server.port)
        status = status_of(again)
        again.close()
        if status == 200:
            break
        assert status == 429
        assert time.monotonic() - killed_at < lease_s + 2, "the lease did not expire"
        time.sleep(0.1)
    assert time.monotonic() - killed_at > lease_s / 2  # it was Redis' lease that expired
