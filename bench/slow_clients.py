"""Many clients that read slowly: what a server holds in memory for them.

A media server's memory is set by its slowest readers, not its fastest: a
phone on a weak network reads a film at a few hundred KB/s for an hour. Each
client here opens a raw socket with a small receive buffer (so the kernel
cannot absorb the body for it), sends one GET and reads at a fixed rate until
its time is up, then closes. A server that does not wait for the client
before reading more of the file grows by the difference.

The load is bounded: at most MAX_CLIENTS connections, MAX_DURATION_S seconds,
loopback addresses only; every client stops by itself.

Run alone: python bench/slow_clients.py --port 8080 --path /files/big.bin
"""

import argparse
import asyncio
import ipaddress
import socket
from dataclasses import dataclass

MAX_CLIENTS = 1000
MAX_DURATION_S = 60.0

KiB = 1024
# Small receive buffers, as on a constrained client; the kernel doubles the value set.
RECEIVE_BUFFERS_BYTES = (16 * KiB, 32 * KiB, 64 * KiB)
_READ_SIZE_BYTES = 16 * KiB
# Clients connect over this long rather than all at once, which would
# overflow a listen backlog of 128 (Tornado's default) and measure SYN retries.
_RAMP_S = 1.0


@dataclass(frozen=True)
class ClientOutcome:
    status_line: bytes
    bytes_received: int
    reading_s: float
    closed_early: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.status_line.split(b" ")[1:2] == [b"200"]
            and not self.closed_early
            and self.error is None
        )


@dataclass(frozen=True)
class SlowClientsReport:
    outcomes: list[ClientOutcome]

    @property
    def clients_ok(self) -> int:
        return sum(outcome.ok for outcome in self.outcomes)

    @property
    def client_bytes_per_s(self) -> float:
        """The mean rate a client read at: the configured rate when the server kept pace."""
        reading_s = sum(outcome.reading_s for outcome in self.outcomes)
        return sum(outcome.bytes_received for outcome in self.outcomes) / reading_s

    def failures(self) -> list[str]:
        """One line per distinct kind of failure, with how many clients it hit."""
        kinds: dict[str, int] = {}
        for outcome in self.outcomes:
            if not outcome.ok:
                kind = outcome.error or (
                    "closed early"
                    if outcome.closed_early
                    else f"status {outcome.status_line.decode(errors='replace')!r}"
                )
                kinds[kind] = kinds.get(kind, 0) + 1
        return [f"{count} x {kind}" for kind, count in kinds.items()]


async def run_slow_clients(
    host: str, port: int, path: str, clients: int, rate_bytes_per_s: int, duration_s: float
) -> SlowClientsReport:
    """Run `clients` slow readers of `path` for `duration_s` and report what they got."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing a non-loopback target: {host}")
    if not (0 < clients <= MAX_CLIENTS and 0 < duration_s <= MAX_DURATION_S):
        raise ValueError(f"at most {MAX_CLIENTS} clients for at most {MAX_DURATION_S:.0f} s")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _RAMP_S + duration_s
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    outcomes = await asyncio.gather(
        *(
            _read_slowly(
                host,
                port,
                request,
                receive_buffer_bytes=RECEIVE_BUFFERS_BYTES[index % len(RECEIVE_BUFFERS_BYTES)],
                rate_bytes_per_s=rate_bytes_per_s,
                start_delay_s=_RAMP_S * index / clients,
                deadline=deadline,
            )
            for index in range(clients)
        )
    )
    return SlowClientsReport(outcomes)


async def _read_slowly(
    host: str,
    port: int,
    request: bytes,
    *,
    receive_buffer_bytes: int,
    rate_bytes_per_s: int,
    start_delay_s: float,
    deadline: float,
) -> ClientOutcome:
    """One client: connect, ask, then read no faster than the rate until the deadline."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(start_delay_s)
    received = 0
    first_bytes = b""
    reading_since = loop.time()

    def outcome(closed_early: bool, error: str | None = None) -> ClientOutcome:
        return ClientOutcome(
            _status_line(first_bytes), received, loop.time() - reading_since, closed_early, error
        )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Before connect(), so that the window scale negotiated fits the small buffer.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), deadline - loop.time())
        await loop.sock_sendall(sock, request)
        while (remaining_s := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, _READ_SIZE_BYTES), remaining_s)
            if not chunk:
                return outcome(closed_early=True)
            if len(first_bytes) < 64:
                first_bytes += chunk[:64]
            received += len(chunk)
            ahead_s = received / rate_bytes_per_s - (loop.time() - reading_since)
            if ahead_s > 0:
                await asyncio.sleep(min(ahead_s, max(deadline - loop.time(), 0)))
        return outcome(closed_early=False)
    except asyncio.TimeoutError:
        # The deadline fell while waiting for data: time is up, not a failure.
        return outcome(closed_early=False)
    except OSError as error:
        return outcome(closed_early=False, error=type(error).__name__)
    finally:
        sock.close()


def _status_line(first_bytes: bytes) -> bytes:
    return first_bytes.split(b"\r\n", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate-kib", type=int, default=256, help="per client, KiB/s")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of reading")
    args = parser.parse_args()
    report = asyncio.run(
        run_slow_clients(
            args.host, args.port, args.path, args.clients, args.rate_kib * KiB, args.duration
        )
    )
    print(
        f"{report.clients_ok}/{len(report.outcomes)} clients ok, "
        f"{report.client_bytes_per_s / KiB:.0f} KiB/s per client",
        *report.failures(),
        sep="\n",
    )


if __name__ == "__main__":
    main()
