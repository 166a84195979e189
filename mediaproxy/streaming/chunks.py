"""Read sizes that follow the client, within one budget of bytes for all streams of a kind.

A stream reads little at a time while its client is slow and more while it keeps up: fewer,
larger reads cost less CPU per byte, and a slow client should not have a large read waiting in
memory for it. Each kind of stream (the copying file path, the proxy relay) has one budget:
every stream may always hold the smallest chunk, and growing takes only from what is left, so
many slow streams stay small while a lone fast one gets the largest chunks.

The budget counts bytes actually held, not a share per stream: streams that start together
all look fast at first (their first writes land in empty socket buffers), and a per-stream
share worked out while few of them had started let each take the most (on the file path it
more than doubled the peak memory of 200 slow clients: bench/RESULTS.md).

A budget may follow the clients (``DrainRate``): on top of a fixed floor, it grants what all
its streams' clients took in the last window, scaled to a short horizon, up to a ceiling. Memory
then grows with what the clients really drain, not with how many of them there are: 32 clients
draining a gigabyte a second between them get large chunks, while 200 slow ones, draining little
in sum, leave the budget at its floor whatever their first writes looked like.

Pure bookkeeping on an injected clock, no I/O; each kind of stream decides what size it wants
and when.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class DrainRate:
    """The bytes per second all streams of one kind handed their clients, window by window.

    The rate is that of the last complete window of at least ``window_s``; a window in which
    nothing moved counts as zero, so a burst that has ended stops growing the budget.
    """

    def __init__(self, clock: Callable[[], float], window_s: float) -> None:
        self._clock = clock
        self._window_s = window_s
        self._window_start = clock()
        self._window_bytes = 0
        self.bytes_per_s = 0.0

    def record(self, sent_bytes: int) -> None:
        now = self._clock()
        elapsed_s = now - self._window_start
        if elapsed_s >= self._window_s:
            self.bytes_per_s = self._window_bytes / elapsed_s
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += sent_bytes


class ChunkBudget:
    """The chunk bytes all streams of one kind may hold together.

    ``total_bytes`` is fixed, or, with ``drain`` set, that floor plus what the clients drained
    per second times ``horizon_s``, never above ``ceiling_bytes``.
    """

    def __init__(
        self,
        total_bytes: int,
        *,
        min_bytes: int,
        max_bytes: int,
        drain: DrainRate | None = None,
        horizon_s: float = 0.0,
        ceiling_bytes: int = 0,
    ) -> None:
        self.floor_bytes = total_bytes
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.drain = drain
        self.horizon_s = horizon_s
        self.ceiling_bytes = max(ceiling_bytes, total_bytes)
        self.held_bytes = 0

    @property
    def total_bytes(self) -> int:
        if self.drain is None:
            return self.floor_bytes
        grant = int(self.drain.bytes_per_s * self.horizon_s)
        return min(self.ceiling_bytes, self.floor_bytes + grant)

    @contextlib.contextmanager
    def share(self) -> Iterator[ChunkShare]:
        """One stream's chunk size for as long as the stream runs, given back after."""
        share = ChunkShare(self)
        try:
            yield share
        finally:
            self.held_bytes -= share.size


class ChunkShare:
    """One stream's chunk size, counted in its budget; it starts at the smallest."""

    def __init__(self, budget: ChunkBudget) -> None:
        self._budget = budget
        self.size = budget.min_bytes
        budget.held_bytes += self.size

    def drained(self, sent_bytes: int) -> None:
        """The client took ``sent_bytes`` more: what a budget that follows the clients counts."""
        if self._budget.drain is not None:
            self._budget.drain.record(sent_bytes)

    def resize(self, wanted_bytes: int) -> None:
        """As near ``wanted_bytes`` as the bounds allow and the budget has left to grow into."""
        budget = self._budget
        free_bytes = max(0, budget.total_bytes - budget.held_bytes)
        size = max(budget.min_bytes, min(wanted_bytes, budget.max_bytes, self.size + free_bytes))
        budget.held_bytes += size - self.size
        self.size = size
