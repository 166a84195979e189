"""The two timers every stream obeys: idle (no byte moved) and total duration.

Tornado times out only request headers and request bodies; nothing stops a response that has
stopped moving or runs forever. ``StreamTimers`` does, cheaply: ``progress()`` only stores the
clock's time, and a single idle callback re-arms itself for whatever idle time remains, so a
stream moving thousands of chunks a second schedules one callback per idle period, not one per
chunk. The clock is injected so tests advance time instead of sleeping.
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
    """Call ``on_expire(reason)`` once, when the stream idles or outlasts its cap."""

    def __init__(self, clock: Clock, *, idle_timeout_s: float, max_duration_s: float,
                 on_expire: Callable[[Termination], None]) -> None:
        self._clock = clock
        self._idle_timeout_s = idle_timeout_s
        self._max_duration_s = max_duration_s
        self._on_expire = on_expire
        self._last_progress = clock.time()
        self._idle_handle: TimerHandle | None = None
        self._total_handle: TimerHandle | None = None
        self.expired: Termination | None = None

    def start(self) -> None:
        self._last_progress = self._clock.time()
        self._idle_handle = self._clock.call_later(self._idle_timeout_s, self._check_idle)
        self._total_handle = self._clock.call_later(
            self._max_duration_s, lambda: self._expire(Termination.MAX_DURATION))

    def progress(self) -> None:
        """Bytes moved: the idle period starts again."""
        self._last_progress = self._clock.time()

    def cancel(self) -> None:
        for handle in (self._idle_handle, self._total_handle):
            if handle is not None:
                handle.cancel()
        self._idle_handle = self._total_handle = None

    def _check_idle(self) -> None:
        idle_for = self._clock.time() - self._last_progress
        if idle_for >= self._idle_timeout_s:
            self._expire(Termination.IDLE_TIMEOUT)
        else:
            self._idle_handle = self._clock.call_later(
                self._idle_timeout_s - idle_for, self._check_idle)

    def _expire(self, reason: Termination) -> None:
        if self.expired is None:
            self.expired = reason
            self.cancel()
            self._on_expire(reason)
