"""The rate limit's arithmetic against a fake clock: a sender that obeys it, and no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.streaming.pacing import PIECES_PER_S, Pacer


def send_all(
    pacer: Pacer, total_bytes: int, start: float = 100.0, chunk_bytes: int = 1 << 20
) -> tuple[float, list[tuple[float, int]]]:
    """Send like the handler does, with instant writes; the end time and every (time, piece)."""
    now = start
    pieces: list[tuple[float, int]] = []
    left = total_bytes
    while left:
        chunk_left = min(chunk_bytes, left)
        while chunk_left:
            now += pacer.wait_s(now)
            piece = min(chunk_left, pacer.piece_bytes())
            pieces.append((now, piece))
            pacer.record(piece)
            chunk_left -= piece
            left -= piece
    return now, pieces


def test_the_burst_goes_at_once_then_the_rate_holds() -> None:
    pacer = Pacer(rate_bytes_per_s=500_000, free_bytes=100_000)
    end, pieces = send_all(pacer, 1_000_000)
    assert pieces[0] == (100.0, 100_000)  # the whole burst in one write, no wait
    # The remaining 900 kB at 500 kB/s: the last piece may leave 1.8 s minus its own share.
    assert end == pytest.approx(100.0 + (900_000 - pieces[-1][1]) / 500_000)
    assert pacer.sent_bytes == 1_000_000


def test_without_a_burst_the_rate_applies_from_the_first_byte() -> None:
    pacer = Pacer(rate_bytes_per_s=100_000)
    assert pacer.wait_s(5.0) == 0.0
    assert pacer.piece_bytes() == 100_000 // PIECES_PER_S
    pacer.record(5000)
    assert pacer.wait_s(5.0) == pytest.approx(0.05)
    assert pacer.wait_s(5.2) == 0.0  # late already: send at once


def test_pieces_are_a_twentieth_of_a_second_and_at_least_a_byte() -> None:
    assert Pacer(1_000_000).piece_bytes() == 50_000
    assert Pacer(100).piece_bytes() == 5
    assert Pacer(3).piece_bytes() == 1


@given(rate=st.integers(20, 10**9), burst=st.integers(0, 10**6))
def test_no_pause_between_pieces_exceeds_a_twentieth_of_a_second(rate: int, burst: int) -> None:
    pacer = Pacer(rate, burst)
    now = 0.0
    for _ in range(50):
        wait_s = pacer.wait_s(now)
        assert wait_s <= 1 / PIECES_PER_S + 1e-9
        now += wait_s
        pacer.record(pacer.piece_bytes())


def test_a_client_behind_schedule_catches_up_without_waiting() -> None:
    pacer = Pacer(rate_bytes_per_s=1000)
    assert pacer.wait_s(0.0) == 0.0  # anchors the schedule at 0
    pacer.record(1000)
    # The client then stalled until 11 s (writes blocked): the 11 kB due by then go at once.
    for _ in range(10):
        assert pacer.wait_s(11.0) == 0.0
        pacer.record(1000)
    assert pacer.wait_s(11.0) == 0.0
    pacer.record(1000)
    assert pacer.wait_s(11.0) == pytest.approx(1.0)


@pytest.mark.parametrize("rate, burst", [(0, 0), (-1, 0), (100, -1)])
def test_nonsense_limits_are_refused(rate: int, burst: int) -> None:
    with pytest.raises(ValueError):
        Pacer(rate, burst)


@given(rate=st.integers(1000, 10**8), burst=st.integers(0, 10**6), total=st.integers(1, 10**6))
def test_the_average_past_the_burst_never_exceeds_the_rate(
    rate: int, burst: int, total: int
) -> None:
    start = 50.0
    _, pieces = send_all(Pacer(rate, burst), total, start=start, chunk_bytes=65536)
    sent_before = 0
    for when, piece in pieces:
        if sent_before > burst:
            assert (sent_before - burst) / rate <= when - start + 1e-9
        sent_before += piece
    assert sent_before == total
