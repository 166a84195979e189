"""The two timers every stream obeys: idle (no byte moved) and total duration.

Tornado times out only request headers and request bodies; nothing stops a response that has
stopped moving or runs forever. ``StreamTimers`` does, cheaply: ``progress()`` only stores the
clock's time, and a single callback for both limits re-arms itself for whatever time remains,
so a stream moving thousands of chunks a second schedules one callback per idle period, not
one per chunk, and a short request schedules one in all. The clock is injected so tests
advance time instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mediaproxy.errors import Termination


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What StreamTimers needs of an event loop; ``asyncio.AbstractEventLoop`` is one."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle: ...


class StreamTimers:
    """Call ``on_expire(reason)`` once, when the stream idles or outlasts its cap.

    One callback serves both limits: it is due at the nearer of the two deadlines and, if
    neither has passed when it runs, re-arms itself for the nearer remaining one.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        idle_timeout_s: float,
        max_duration_s: float,
        on_expire: Callable[[Termination], None],
    ) -> None:
        self._clock = clock
        self._idle_timeout_s = idle_timeout_s
        self._max_duration_s = max_duration_s
        self._on_expire = on_expire
        self._started_at = self._last_progress = clock.time()
        self._handle: TimerHandle | None = None
        self.expired: Termination | None = None

    def start(self) -> None:
        self._started_at = self._last_progress = self._clock.time()
        self._handle = self._clock.call_later(
            min(self._idle_timeout_s, self._max_duration_s), self._check
        )

    def progress(self) -> None:
        """Bytes moved: the idle period starts again."""
        self._last_progress = self._clock.time()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        now = self._clock.time()
        total_left_s = self._max_duration_s - (now - self._started_at)
        idle_left_s = self._idle_timeout_s - (now - self._last_progress)
        if total_left_s <= 0:
            self._expire(Termination.MAX_DURATION)
        elif idle_left_s <= 0:
            self._expire(Termination.IDLE_TIMEOUT)
        else:
            self._handle = self._clock.call_later(min(idle_left_s, total_left_s), self._check)

    def _expire(self, reason: Termination) -> None:
        if self.expired is None:
            self.expired = reason
            self.cancel()
            self._on_expire(reason)
