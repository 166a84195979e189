"""Reading a file region into an Exchange, the disk's waits kept off the event loop.

This is the copying path, for when zero-copy ``sendfile`` cannot be used (TLS, a body
transform, or a route that asked for it). Reads run on a dedicated thread pool with one chunk
of read-ahead; tornado's DNS resolver uses the default pool, so that one is left alone. A
region of at most 64 KiB (a small file, a player's probe range, a multipart part) is read on
the loop instead: from the page cache that costs less than the hop to a thread, and from a cold
disk it is one short read, not a stream of them. Chunk
size adapts to the client: it doubles while the socket takes every chunk at once and drops to
the minimum as soon as a write has to wait, so a fast client gets 1 MiB reads (far faster
than 256 KiB ones: bench/RESULTS.md) and a slow one holds only two small chunks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Protocol

from mediaproxy.streaming.chunks import ChunkBudget, ChunkShare
from mediaproxy.streaming.threads import LazyPool

MIN_CHUNK_BYTES = 64 * 1024  # Tornado's own read chunk; two of them per slow client
MAX_CHUNK_BYTES = 1024 * 1024
INLINE_READ_BYTES = 64 * 1024  # a page-cached read this small costs less than a thread hop
READ_THREADS = 4
# Chunk bytes all copying streams together may hold (each holds up to two chunks; see
# mediaproxy.streaming.chunks). 200 slow clients at the minimum already exceed it, so they
# never grow; a lone fast one gets full 1 MiB chunks.
READ_BUDGET_BYTES = 8 * 1024 * 1024


class Sink(Protocol):
    """Where the chunks go (an integration's ``Exchange`` is one): a send that waits for the
    client, and whether the last one had to."""

    async def send(self, chunk: bytes) -> None: ...

    @property
    def last_send_waited(self) -> bool: ...


_read_pool = LazyPool(READ_THREADS, "mediaproxy-read")
_read_budget = ChunkBudget(READ_BUDGET_BYTES, min_bytes=MIN_CHUNK_BYTES, max_bytes=MAX_CHUNK_BYTES)


def next_chunk_bytes(size: int, client_kept_up: bool) -> int:
    """Double while the client keeps up; back to the smallest the moment it does not."""
    return size * 2 if client_kept_up else MIN_CHUNK_BYTES


def pread_exactly(fd: int, length: int, offset: int) -> bytes:
    chunk = os.pread(fd, length, offset)
    if len(chunk) != length:
        raise OSError(f"file shrank while being read (at byte {offset + len(chunk)})")
    return chunk


async def send_by_reading(exchange: Sink, fd: int, offset: int, length: int) -> None:
    """Send ``length`` bytes of ``fd`` from ``offset``, chunk by chunk, flow-controlled."""
    if length <= INLINE_READ_BYTES:
        await exchange.send(pread_exactly(fd, length, offset))
        return
    with _read_budget.share() as share:
        async with aclosing(_read_ahead(fd, offset, offset + length, share)) as chunks:
            async for chunk in chunks:
                await exchange.send(chunk)
                share.resize(
                    next_chunk_bytes(share.size, client_kept_up=not exchange.last_send_waited)
                )


async def _read_ahead(
    fd: int, start: int, stop: int, share: ChunkShare
) -> AsyncGenerator[bytes, None]:
    """Chunks of [start, stop), the next one already being read while this one is sent."""
    loop = asyncio.get_running_loop()
    position = start

    def read_next() -> asyncio.Future[bytes] | None:
        nonlocal position
        if position >= stop:
            return None
        length = min(share.size, stop - position)
        future = loop.run_in_executor(_read_pool.get(), pread_exactly, fd, length, position)
        position += length
        return future

    pending = read_next()
    try:
        while pending is not None:
            chunk = await pending
            pending = read_next()
            yield chunk
    finally:
        if pending is not None:
            # Not yet started: it never runs. Running: it finishes into a future nobody reads,
            # and the caller closes the descriptor only after this generator is closed.
            pending.cancel()
