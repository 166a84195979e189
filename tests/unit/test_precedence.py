"""First bytes before bulk: full sends while nobody waits, a quantum while a response waits
for its first byte, for at most PRECEDENCE_S each."""

from __future__ import annotations

from mediaproxy.streaming.precedence import PRECEDENCE_S, STARTING_QUANTUM_BYTES, FirstBytes

BIG = 8 * 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_full_sends_while_nobody_waits() -> None:
    assert FirstBytes(Clock()).send_bytes(BIG) == BIG


def test_a_quantum_while_a_response_waits_for_its_first_byte() -> None:
    first_bytes = FirstBytes(Clock())
    new, newer = object(), object()
    first_bytes.waiting(new)
    first_bytes.waiting(newer)
    assert first_bytes.send_bytes(BIG) == STARTING_QUANTUM_BYTES
    assert first_bytes.send_bytes(100) == 100
    first_bytes.started(newer)  # in any order
    assert first_bytes.send_bytes(BIG) == STARTING_QUANTUM_BYTES
    first_bytes.started(new)
    first_bytes.started(new)  # ended after its first byte: nothing more to forget
    assert first_bytes.send_bytes(BIG) == BIG


def test_precedence_lasts_precedence_s_at_most() -> None:
    clock = Clock()
    first_bytes = FirstBytes(clock)
    slow = object()  # waiting for its origin, not for the loop
    first_bytes.waiting(slow)
    clock.now_s += PRECEDENCE_S / 2
    fresh = object()
    first_bytes.waiting(fresh)
    clock.now_s += PRECEDENCE_S / 2 + 0.001
    assert first_bytes.send_bytes(BIG) == STARTING_QUANTUM_BYTES  # fresh still has it
    clock.now_s += PRECEDENCE_S / 2
    assert first_bytes.send_bytes(BIG) == BIG
    first_bytes.started(slow)  # long forgotten: no error
    assert first_bytes.send_bytes(BIG) == BIG
