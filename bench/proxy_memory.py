"""Peak memory of the http_proxy relay, both directions, against a real origin.

    .venv/bin/python bench/proxy_memory.py [--size-mib 1024] [--rate-mb 10]

Four runs, each on a freshly started gateway process (so its VmHWM is that run's peak):

- download: a client reading a SIZE body through the proxy at RATE MB/s; the origin sends as
  fast as it is allowed. Flow control must keep the gateway's memory flat.
- upload: a client sending a SIZE body as fast as the gateway takes it, to an origin that
  reads at RATE MB/s. Flow control the other way.
- slow clients: 200 downloads at once, each read at 256 KiB/s for 12 s (issue 3's third
  memory figure; the same bound).
- fast download: the same body to a client reading as fast as it can: relay MB/s and the
  gateway's CPU seconds per GiB (not a memory figure; there for context).

Issue 3's bound: peak RSS under 64 MB for each of the first three. The gateway and the origin
(testbed/origin.py) run as separate processes on loopback; figures come from
/proc/<gateway pid>/status (VmRSS before the transfer, VmHWM after) and /proc/<pid>/stat.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.origin import pattern, pattern_sha256  # noqa: E402

LIMIT_BYTES = 64 * 1000 * 1000
PIECE_BYTES = 64 * 1024
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


@contextmanager
def started(
    command: list[str], ready: re.Pattern[str], stream: str
) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """Start a server process and wait for the line that says it listens."""
    process = subprocess.Popen(
        command, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        source = process.stdout if stream == "stdout" else process.stderr
        assert source is not None
        for line in source:
            if match := ready.search(line):
                yield process, match
                break
        else:
            raise RuntimeError(f"{command[0]} exited: {process.wait()}")
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def gateway(origin_port: int) -> Iterator[tuple[int, int]]:
    """A mediaproxy process proxying /o to the origin: (its pid, its port)."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "proxy.toml"
        config.write_text(
            f'[server]\nport = 0\naccess_log = "off"\n[[routes]]\nprefix = "/o"\n'
            f'integration = "http_proxy"\n'
            f'upstream = "http://127.0.0.1:{origin_port}/"\n'
            f"idle_timeout = 60\nmax_stream_duration = 3600\n"
        )
        command = [
            sys.executable,
            "-m",
            "mediaproxy",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ]
        # WARNING hides the start-up line, so listen where the test suite's fixtures do:
        # pick a free port and pass it.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command += ["--port", str(port)]
        process = subprocess.Popen(command, cwd=REPO)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("the gateway did not start")
                    time.sleep(0.05)
            yield process.pid, port
        finally:
            process.terminate()
            process.wait(30)


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise RuntimeError(f"connection closed before the response headers: {data!r}")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def download(port: int, size: int, rate_bytes_per_s: float | None) -> float:
    """GET size bytes at a paced rate (None: as fast as possible); the seconds it took."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started_at = time.monotonic()
        sock.sendall(f"GET /o/bytes?n={size} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head, first = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        digest = hashlib.sha256(first)
        received = len(first)
        while received < size:
            piece = sock.recv(min(PIECE_BYTES, size - received))
            if not piece:
                raise RuntimeError(f"cut after {received} of {size} bytes")
            digest.update(piece)
            received += len(piece)
            if rate_bytes_per_s:
                ahead_s = started_at + received / rate_bytes_per_s - time.monotonic()
                if ahead_s > 0:
                    time.sleep(ahead_s)
        elapsed_s = time.monotonic() - started_at
    assert digest.hexdigest() == pattern_sha256(size), "the body arrived altered"
    return elapsed_s


def upload(port: int, size: int, rate_bytes_per_s: float) -> float:
    """PUT size bytes to an origin reading at that rate; the seconds it took."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started_at = time.monotonic()
        sock.sendall(
            f"PUT /o/upload?rate={rate_bytes_per_s:.0f} HTTP/1.1\r\nHost: bench\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        for offset in range(0, size, 1 << 20):
            sock.sendall(pattern(offset, min(1 << 20, size - offset)))
        head, body = read_head(sock)
        while not body.endswith(b"}"):
            body += sock.recv(65536)
        elapsed_s = time.monotonic() - started_at
    assert head.startswith(b"HTTP/1.1 200"), head
    assert pattern_sha256(size) in body.decode(), f"the upload arrived altered: {body!r}"
    return elapsed_s


async def slow_clients(port: int, clients: int, rate_bytes_per_s: float, seconds: float) -> int:
    """``clients`` downloads at once, each paced to the rate for ``seconds``; bytes received."""

    async def one() -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIECE_BYTES)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /o/bytes?n={1 << 30} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        started_at = time.monotonic()
        received = 0
        while (now := time.monotonic()) - started_at < seconds:
            await asyncio.sleep(max(0.0, started_at + received / rate_bytes_per_s - now))
            received += len(await reader.read(PIECE_BYTES))
        writer.close()
        return received

    return sum(await asyncio.gather(*(one() for _ in range(clients))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mb", type=float, default=10.0, help="paced rate, MB/s (10^6)")
    parser.add_argument("--slow-clients", type=int, default=200)
    parser.add_argument("--slow-rate-kib", type=float, default=256, help="KiB/s per slow client")
    parser.add_argument("--slow-seconds", type=float, default=12)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    rate = args.rate_mb * 1e6

    def timed(transfer: Callable[[], float]) -> tuple[int, float]:
        return size, transfer()

    def many_slow_clients() -> tuple[int, float]:
        started_at = time.monotonic()
        moved = asyncio.run(
            slow_clients(port, args.slow_clients, args.slow_rate_kib * 1024, args.slow_seconds)
        )
        return moved, time.monotonic() - started_at

    runs: dict[str, Callable[[], tuple[int, float]]] = {
        "download": lambda: timed(lambda: download(port, size, rate)),
        "upload": lambda: timed(lambda: upload(port, size, rate)),
        f"{args.slow_clients} slow": many_slow_clients,
        "fast download": lambda: timed(lambda: download(port, size, None)),
    }
    print(
        f"http_proxy memory: {args.size_mib} MiB at {args.rate_mb:g} MB/s; "
        f"{args.slow_clients} clients at {args.slow_rate_kib:g} KiB/s for "
        f"{args.slow_seconds:g} s; python {sys.version.split()[0]}, {os.cpu_count()} CPUs",
        flush=True,
    )
    origin_command = [sys.executable, "-m", "testbed.origin", "--port", "0"]
    worst_peak = 0
    with started(origin_command, re.compile(r"listening on (\d+)"), "stdout") as (_, match):
        origin_port = int(match[1])
        for name, run in runs.items():
            with gateway(origin_port) as (pid, port):
                idle_kib = status_kib(pid, "VmRSS")
                cpu_before = cpu_s(pid)
                moved, elapsed_s = run()
                cpu_used = cpu_s(pid) - cpu_before
                peak_kib = status_kib(pid, "VmHWM")
            if name != "fast download":
                worst_peak = max(worst_peak, peak_kib * 1024)
            print(
                f"{name:>13}: {moved / elapsed_s / 1e6:8.1f} MB/s in {elapsed_s:6.1f} s; "
                f"gateway RSS idle {idle_kib / 1024:5.1f} MiB, peak {peak_kib / 1024:5.1f} "
                f"MiB ({peak_kib * 1024 / 1e6:.1f} MB); CPU {cpu_used / (moved / 2**30):.2f} "
                f"s/GiB",
                flush=True,
            )
    verdict = "within" if worst_peak < LIMIT_BYTES else "OVER"
    print(f"peak RSS {worst_peak / 1e6:.1f} MB: {verdict} the {LIMIT_BYTES / 1e6:.0f} MB bound")


if __name__ == "__main__":
    main()
