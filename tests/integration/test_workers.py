"""`mediaproxy` with `processes = 2`, run as a real command: shared port, summed metrics, drain."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediaproxy.server.workers import MIN_UPTIME_S

from .support import (
    GatewayThread,
    Server,
    make_sparse_file,
    open_stalled_download,
    read_access_log,
    request,
    start_slow_download,
    wait_until,
)

BIG_BYTES = 20 * 1024 * 1024
# curl lets a first burst of ~10 MB through, then holds the rate: the download lasts ~2 s.
RATE_BYTES_PER_S = 6 * 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    make_sparse_file(tmp_path / "big.bin", BIG_BYTES)
    (tmp_path / "small.txt").write_text("small\n")
    config = tmp_path / "mediaproxy.toml"
    config.write_text(f"""
[server]
port = 0
processes = 2
shutdown_grace = 10
access_log = "access.log"
[[routes]]
prefix = "/files"
integration = "file"
root = "{tmp_path}"
""")
    running = Server(config)
    yield running
    running.close()


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, status or '') -> value, for the /files route."""
    text = request(port, "GET", "/metrics").body.decode()
    return {
        (sample.name, sample.labels.get("status", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("route") == "/files"
    }


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_two_workers_share_the_port_sum_their_metrics_and_drain_on_sigterm(
    server: Server, tmp_path: Path
) -> None:
    assert len(server.worker_pids) == 2
    seen: set[int] = set()
    for _ in range(200):  # fresh connections until the kernel has handed some to each
        seen.add(json.loads(request(server.port, "GET", "/_mediaproxy/api/overview").body)["pid"])
        if seen == server.worker_pids:
            break
    assert seen == server.worker_pids

    for _ in range(10):
        assert request(server.port, "GET", "/files/small.txt").body == b"small\n"
    wait_until(lambda: scrape(server.port)[("mediaproxy_requests_total", "200")] == 10)

    download = start_slow_download(
        f"http://127.0.0.1:{server.port}/files/big.bin", RATE_BYTES_PER_S, tmp_path / "out.bin"
    )
    wait_until(lambda: scrape(server.port).get(("mediaproxy_active_streams", "")) == 1)

    stopped_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # At least 4 MiB (most of a second) still to come: the drain has something to wait for.
    assert (tmp_path / "out.bin").stat().st_size < BIG_BYTES - 4 * 1024 * 1024
    server.wait_for_line(r"stopping 2 workers")
    with pytest.raises(ConnectionRefusedError):  # drained workers accept nothing new
        for _ in range(100):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            time.sleep(0.02)

    out, err = download.communicate(timeout=20)
    assert (download.returncode, out) == (0, "200"), err
    assert (tmp_path / "out.bin").stat().st_size == BIG_BYTES
    assert server.process.wait(timeout=15) == 0
    assert time.monotonic() - stopped_at < 10  # within the grace period
    lines = read_access_log(tmp_path / "access.log")
    (big,) = [line for line in lines if line["path"] == "/files/big.bin"]
    assert (big["termination"], big["bytes_sent"]) == ("complete", BIG_BYTES)


def test_draining_refuses_new_requests_on_kept_alive_connections(
    make_gateway,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    make_sparse_file(tmp_path / "big.bin", BIG_BYTES)
    gateway: GatewayThread = make_gateway(f"""
        [server]
        shutdown_grace = 5
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{tmp_path}"
    """)
    balancer = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    balancer.request("GET", "/healthz")
    assert balancer.getresponse().read() == b"ok\n"
    client = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    client.request("HEAD", "/files/big.bin")
    head = client.getresponse()
    assert (head.status, head.read()) == (200, b"")
    running = open_stalled_download(gateway.port, "/files/big.bin")  # the drain waits for it
    wait_until(lambda: gateway.active_streams() == 1)

    assert gateway.running is not None
    shutdown = gateway.running.shutdown
    gateway.call(lambda: asyncio.ensure_future(shutdown()))
    balancer.request("GET", "/healthz")
    reply = balancer.getresponse()
    assert (reply.status, reply.getheader("Connection"), reply.read()) == (
        503,
        "close",
        b"draining\n",
    )
    # Admitted, a new stream would hold the drain and be cut at its end: sent elsewhere.
    client.request("GET", "/files/big.bin")
    refused = client.getresponse()
    assert (refused.status, refused.getheader("Retry-After"), refused.getheader("Connection")) == (
        503,
        "1",
        "close",
    )
    assert gateway.active_streams() == 1
    running.close()
    client.close()
    balancer.close()


def status_line(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    return sock.recv(4096).split(b"\r\n", 1)[0]


def test_the_stream_cap_holds_for_the_instance_and_a_killed_workers_slots_return(
    tmp_path: Path,
) -> None:
    make_sparse_file(tmp_path / "big.bin", BIG_BYTES)
    config = tmp_path / "mediaproxy.toml"
    config.write_text(f"""
[server]
port = 0
processes = 2
access_log = "off"
[limits]
max_concurrent_streams = 1
[[routes]]
prefix = "/files"
integration = "file"
root = "{tmp_path}"
""")
    server = Server(config)
    try:
        # Fresh connections land on both workers; one stream runs in the whole instance.
        downloads = [open_stalled_download(server.port, "/files/big.bin") for _ in range(8)]
        lines = sorted(status_line(sock) for sock in downloads)
        assert lines.count(b"HTTP/1.1 200 OK") == 1, lines
        assert lines.count(b"HTTP/1.1 503 Service Unavailable") == 7, lines
        # Past the start-up window, a killed worker is restarted (not taken for a crash loop).
        time.sleep(max(0.0, MIN_UPTIME_S + 0.2 - (time.monotonic() - server.started_at)))
        for pid in server.worker_pids:  # the one holding the slot among them
            os.kill(pid, signal.SIGKILL)
        for sock in downloads:
            sock.close()
        server.wait_for_line(r"restarting it(.|\n)*restarting it")
        again = open_stalled_download(server.port, "/files/big.bin")
        assert status_line(again) == b"HTTP/1.1 200 OK"
        again.close()
    finally:
        server.close()


def test_the_live_table_shows_every_workers_streams(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/_mediaproxy/events")
    reply = connection.getresponse()
    assert reply.status == 200

    def next_streams() -> list[dict[str, object]]:
        while not (line := reply.fp.readline().decode()).startswith("data: "):
            pass
        streams: list[dict[str, object]] = json.loads(line[len("data: ") :])["streams"]
        return streams

    downloads: list[socket.socket] = []
    # Fresh connections until the kernel has handed some to each worker; the one page sees
    # them all, whichever worker serves its events.
    while True:
        downloads.append(open_stalled_download(server.port, "/files/big.bin"))
        assert status_line(downloads[-1]) == b"HTTP/1.1 200 OK"
        for _ in range(5):  # each worker publishes its streams once a second
            streams = next_streams()
            if len(streams) == len(downloads):
                break
        assert len(streams) == len(downloads)
        if {stream["pid"] for stream in streams} == server.worker_pids:
            break
        assert len(downloads) < 40
    connection.close()
    for sock in downloads:
        sock.close()


def log_files_held(pid: int) -> set[str]:
    """The *.log* files process ``pid`` has open, by the name each has now."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if ".log" in target:
            held.add(Path(target).name)
    return held


def test_sigusr1_reaches_every_worker_and_the_parent_stays_up(
    server: Server, tmp_path: Path
) -> None:
    """logrotate moves the file away, then signals the one pid it knows."""
    wait_until(
        lambda: all(
            log_files_held(pid) == {"access.log"}  # once each has started
            for pid in server.worker_pids
        )
    )
    (tmp_path / "access.log").rename(tmp_path / "access.log.1")
    server.process.send_signal(signal.SIGUSR1)
    wait_until(
        lambda: all(log_files_held(pid) == {"access.log"} for pid in server.worker_pids),
        timeout_s=10,
    )
    assert server.process.poll() is None
    assert request(server.port, "GET", "/files/small.txt").body == b"small\n"
    wait_until(
        lambda: (
            (tmp_path / "access.log").exists()
            and len(read_access_log(tmp_path / "access.log")) == 1
        )
    )
    # The same workers, not restarted ones: the signal was handled, not fatal.
    assert not re.findall(r"worker \d+ \(pid \d+\)", "".join(server.lines)), server.lines
    for pid in server.worker_pids:
        os.kill(pid, 0)  # still running


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_a_stopping_signal_drains_every_worker_and_the_parent_exits_0(
    server: Server, signum: int
) -> None:
    server.process.send_signal(signum)
    assert server.process.wait(timeout=15) == 0
    for pid in server.worker_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
