"""Time to first byte through a proxy, for an origin that streams as it produces.

A live stream, a transcoder or an export answers at once with headers and a
first small piece, then sends the rest as it has it. What a viewer feels is
when that first piece reaches them; a proxy that waits for a buffer to fill,
or adds its own round trips, shows up here and nowhere else.

The origin (run as its own process, `python bench/ttfb.py origin --port P`)
answers every GET with chunked headers and a FIRST_CHUNK_BYTES chunk at once,
then LATER_CHUNKS more chunks LATER_CHUNK_INTERVAL_S apart, and closes the
connection (saying so in its head): a proxy in front of it can never take its
origin connection from a pool, so every figure includes what a fresh origin
connection costs the proxy. The client opens a fresh connection per request and
measures from the end of its request to the first byte of the body (not the
headers); the same client code runs against the origin directly and through each
proxy, so what it costs itself cancels
out of "added".

Loopback only; every request is bounded by REQUEST_TIMEOUT_S.
"""

import argparse
import asyncio
import time

FIRST_CHUNK_BYTES = 1024
LATER_CHUNKS = 3
LATER_CHUNK_INTERVAL_S = 0.02
REQUEST_TIMEOUT_S = 10.0
_HEAD_END = b"\r\n\r\n"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one request per connection: the first chunk now, the others later, then close."""
    try:
        request = await reader.readuntil(_HEAD_END)
        method = request.split(b" ", 1)[0]
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        if method != b"HEAD":
            writer.write(_chunk(b"f" * FIRST_CHUNK_BYTES))
            await writer.drain()
            for _ in range(LATER_CHUNKS):
                await asyncio.sleep(LATER_CHUNK_INTERVAL_S)
                writer.write(_chunk(b"l" * FIRST_CHUNK_BYTES))
            writer.write(b"0\r\n\r\n")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client is gone; so is this connection
    finally:
        writer.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve_origin(port: int) -> None:
    server = await asyncio.start_server(_answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def first_body_byte_s(port: int, path: str) -> float:
    """Seconds from sending GET `path` on a new connection to the first byte of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        sent_at = time.perf_counter()
        writer.write(request.encode())
        head = await reader.readuntil(_HEAD_END)
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError(f"unexpected answer: {head.splitlines()[0]!r}")
        # The first byte of the body: with chunked framing, the size line of the first chunk.
        await reader.readexactly(1)
        first_byte_at = time.perf_counter()
        await reader.read()  # the rest, so every exchange ends cleanly
        return first_byte_at - sent_at
    finally:
        writer.close()


def measure(port: int, path: str) -> float:
    """One measurement against a server on 127.0.0.1, bounded in time."""
    return asyncio.run(asyncio.wait_for(first_body_byte_s(port, path), REQUEST_TIMEOUT_S))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    origin = commands.add_parser("origin", help="run the streaming origin")
    origin.add_argument("--port", type=int, required=True)
    probe = commands.add_parser("probe", help="measure one server's time to first body byte")
    probe.add_argument("--port", type=int, required=True)
    probe.add_argument("--path", default="/files/stream")
    probe.add_argument("-n", type=int, default=20)
    args = parser.parse_args()
    if args.command == "origin":
        asyncio.run(serve_origin(args.port))
    else:
        samples = sorted(measure(args.port, args.path) * 1e3 for _ in range(args.n))
        print(
            f"time to first body byte: median {samples[len(samples) // 2]:.3f} ms, "
            f"min {samples[0]:.3f} ms, max {samples[-1]:.3f} ms"
        )


if __name__ == "__main__":
    main()
