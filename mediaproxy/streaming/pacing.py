"""Per-connection bandwidth limit with a free initial burst: nginx ``limit_rate_after`` bytes
go out as fast as the client takes them, everything after at ``limit_rate`` bytes per second.

Pure arithmetic over a clock reading the caller passes in (the event loop's ``time()`` in the
handler, plain numbers in tests). The schedule is anchored once, when the burst runs out: byte
``n`` past the burst may go ``n / rate`` seconds after that moment. The sender asks
``wait_s(now)`` before each piece, sleeps that long, writes at most ``piece_bytes()`` and
``record``s it, so the average past the burst never exceeds the rate.
Like nginx, a client that fell behind the schedule (it read slowly for a while) may catch up at
full speed; nothing is ever dropped, only delayed.

Pieces are ``1 / PIECES_PER_S`` of a second's worth of bytes (one byte at least), so a large
chunk from an integration is spread over the second instead of leaving in one lump followed by
a long sleep, and no pause between writes exceeds 50 ms (at rates from 20 B/s up): an idle
timer watching progress never mistakes the pacing for a stalled stream.
"""

from __future__ import annotations

PIECES_PER_S = 20  # 50 ms of data per write: smooth for players, cheap for the loop


class Pacer:
    """How long to wait before the next piece, and how big that piece may be."""

    def __init__(self, rate_bytes_per_s: int, free_bytes: int = 0) -> None:
        if rate_bytes_per_s <= 0 or free_bytes < 0:
            raise ValueError(
                f"need a positive rate and a non-negative burst, got "
                f"{rate_bytes_per_s} B/s after {free_bytes} B"
            )
        self.rate_bytes_per_s = rate_bytes_per_s
        self.free_bytes = free_bytes
        self.sent_bytes = 0
        self._paced_since: float | None = None  # clock reading once the burst was spent

    def piece_bytes(self) -> int:
        """The most to send in one write: the rest of the burst, else a slice of a second."""
        burst_left = self.free_bytes - self.sent_bytes
        if burst_left > 0:
            return burst_left
        return max(1, self.rate_bytes_per_s // PIECES_PER_S)

    def wait_s(self, now: float) -> float:
        """Seconds to wait at ``now`` before sending more (0.0: send at once).

        The first call once the burst is spent anchors the schedule at ``now``.
        """
        if self.sent_bytes < self.free_bytes:
            return 0.0
        if self._paced_since is None:
            self._paced_since = now
        due = self._paced_since + (self.sent_bytes - self.free_bytes) / self.rate_bytes_per_s
        return max(0.0, due - now)

    def record(self, sent_bytes: int) -> None:
        """``sent_bytes`` more went out."""
        self.sent_bytes += sent_bytes
