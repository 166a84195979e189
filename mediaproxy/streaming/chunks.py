"""Read sizes that follow the client, within one budget of bytes for all streams of a kind.

A stream reads little at a time while its client is slow and more while it keeps up: fewer,
larger reads cost less CPU per byte, and a slow client should not have a large read waiting in
memory for it. Each kind of stream (the copying file path, the proxy relay) has one budget:
every stream may always hold the smallest chunk, and growing takes only from what is left, so
many slow streams stay small while a lone fast one gets the largest chunks.

The budget counts bytes actually held, not a share per stream: streams that start together
all look fast at first (their first writes land in empty socket buffers), and a per-stream
share worked out while few of them had started let each take the most (measured on the file
path: 200 slow clients peaked at 160 MiB RSS, against 72 MiB with every chunk at the minimum).

Pure bookkeeping, no I/O; each kind of stream decides what size it wants and when.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ChunkBudget:
    """The chunk bytes all streams of one kind may hold together."""

    def __init__(self, total_bytes: int, *, min_bytes: int, max_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.held_bytes = 0

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

    def resize(self, wanted_bytes: int) -> None:
        """As near ``wanted_bytes`` as the bounds allow and the budget has left to grow into."""
        budget = self._budget
        free_bytes = max(0, budget.total_bytes - budget.held_bytes)
        size = max(budget.min_bytes,
                   min(wanted_bytes, budget.max_bytes, self.size + free_bytes))
        budget.held_bytes += size - self.size
        self.size = size
