"""First bytes before bulk: a response that has not begun does not wait behind running ones.

One process serves every stream on one loop, and a zero-copy send returns once the kernel has
copied what it was handed; to a client draining as fast as loopback, that is all of it. A
stream that sent again at once would keep the loop for as long as its client kept up, and every
request already read would wait behind it: fifty clients of one cached object had their first
bytes spread over hundreds of milliseconds (bench/RESULTS.md). So a bulk sender lets the loop
turn after every send, and while a response of the process waits for its first byte, each bulk
send is at most ``STARTING_QUANTUM_BYTES``: a turn of the loop then costs each running stream
one small copy, and each waiting response moves on a step. nginx bounds its sends the same way
(``sendfile_max_chunk``), so that one fast connection does not hold a worker.

A response has that precedence for at most ``PRECEDENCE_S``: one still waiting after that waits
for its origin or its database, not for the loop, and running streams go back to full sends.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

# Tornado's own read and write chunk: one loopback copy of it takes a few microseconds.
STARTING_QUANTUM_BYTES = 64 * 1024
PRECEDENCE_S = 1.0


class FirstBytes:
    """The responses of one process still waiting for their first body byte."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Response -> when it began waiting, oldest first.
        self._waiting: collections.OrderedDict[object, float] = collections.OrderedDict()

    def waiting(self, response: object) -> None:
        """``response`` has begun and sent no body byte yet."""
        self._waiting[response] = self._clock()

    def started(self, response: object) -> None:
        """``response`` has sent its first body byte, or ended without one."""
        self._waiting.pop(response, None)

    def send_bytes(self, wanted: int) -> int:
        """How much of ``wanted`` a bulk send may hand the kernel now."""
        waiting = self._waiting
        if waiting:
            given_up = self._clock() - PRECEDENCE_S
            while waiting and next(iter(waiting.values())) < given_up:
                waiting.popitem(last=False)
        return min(wanted, STARTING_QUANTUM_BYTES) if waiting else wanted
