"""Chunk sizing of the copying path: fast clients grow, slow ones shrink, all share a budget."""

from __future__ import annotations

from mediaproxy.streaming.chunks import ChunkBudget
from mediaproxy.streaming.diskio import (
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    READ_BUDGET_BYTES,
    next_chunk_bytes,
)


def read_budget(total_bytes: int = READ_BUDGET_BYTES) -> ChunkBudget:
    return ChunkBudget(total_bytes, min_bytes=MIN_CHUNK_BYTES, max_bytes=MAX_CHUNK_BYTES)


def test_grows_while_the_client_keeps_up_and_drops_when_it_waits() -> None:
    budget = read_budget()
    with budget.share() as share:
        sizes = []
        for _ in range(6):
            share.resize(next_chunk_bytes(share.size, client_kept_up=True))
            sizes.append(share.size)
        assert sizes == [128 << 10, 256 << 10, 512 << 10, 1 << 20, MAX_CHUNK_BYTES, MAX_CHUNK_BYTES]
        share.resize(next_chunk_bytes(share.size, client_kept_up=False))
        assert share.size == MIN_CHUNK_BYTES == budget.held_bytes
    assert budget.held_bytes == 0


def test_growth_takes_only_what_the_budget_has_left_but_never_goes_below_the_minimum() -> None:
    budget = read_budget(200 << 10)
    with budget.share() as share:
        for _ in range(5):
            share.resize(next_chunk_bytes(share.size, client_kept_up=True))
        assert share.size == 200 << 10
        with budget.share() as late:  # the budget is spent: it gets the minimum regardless
            late.resize(next_chunk_bytes(late.size, client_kept_up=True))
            assert late.size == MIN_CHUNK_BYTES


def test_a_stream_grows_into_what_another_gave_back() -> None:
    budget = read_budget(MAX_CHUNK_BYTES + MIN_CHUNK_BYTES)
    with budget.share() as first, budget.share() as second:
        for _ in range(5):
            first.resize(next_chunk_bytes(first.size, client_kept_up=True))
            second.resize(next_chunk_bytes(second.size, client_kept_up=True))
        assert first.size + second.size == budget.total_bytes == budget.held_bytes
        first.resize(next_chunk_bytes(first.size, client_kept_up=False))
        for _ in range(5):
            second.resize(next_chunk_bytes(second.size, client_kept_up=True))
        assert (first.size, second.size) == (MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
    assert budget.held_bytes == 0
