"""The idle and total-duration timers, driven by a fake clock: no sleeping."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from mediaproxy.errors import Termination
from mediaproxy.streaming.timers import StreamTimers


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._queue: list[tuple[float, int, FakeHandle, Callable[[], object]]] = []
        self._sequence = 0
        self.scheduled = 0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeHandle:
        handle = FakeHandle()
        self._sequence += 1
        self.scheduled += 1
        heapq.heappush(self._queue, (self.now + delay, self._sequence, handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._queue and self._queue[0][0] <= until:
            when, _, handle, callback = heapq.heappop(self._queue)
            self.now = when
            if not handle.cancelled:
                callback()
        self.now = until


def make_timers(
    clock: FakeClock, idle: float = 10, total: float = 100
) -> tuple[StreamTimers, list[Termination]]:
    fired: list[Termination] = []
    timers = StreamTimers(clock, idle_timeout_s=idle, max_duration_s=total, on_expire=fired.append)
    timers.start()
    return timers, fired


def test_idle_fires_after_idle_period_without_progress() -> None:
    clock = FakeClock()
    _, fired = make_timers(clock)
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.2)
    assert fired == [Termination.IDLE_TIMEOUT]


def test_progress_postpones_idle_and_rearms_once_per_period() -> None:
    clock = FakeClock()
    timers, fired = make_timers(clock)
    for _ in range(95):  # a chunk every 0.5 s for 47.5 s
        clock.advance(0.5)
        timers.progress()
    assert fired == []
    # Thousands of progress calls must not schedule thousands of callbacks.
    assert clock.scheduled <= 2 + 6
    clock.advance(10.01)
    assert fired == [Termination.IDLE_TIMEOUT]


def test_total_duration_fires_even_while_moving() -> None:
    clock = FakeClock()
    timers, fired = make_timers(clock, idle=10, total=30)
    for _ in range(70):
        clock.advance(0.5)
        timers.progress()
    assert fired == [Termination.MAX_DURATION]


def test_fires_once_and_cancel_stops_everything() -> None:
    clock = FakeClock()
    _, fired = make_timers(clock, idle=1, total=1)
    clock.advance(5)
    assert len(fired) == 1
    timers, fired = make_timers(clock)
    timers.cancel()
    clock.advance(1000)
    assert fired == []
