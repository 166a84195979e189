"""Chunk sizing of the copying path: fast clients grow, slow ones shrink, all share a budget."""

from __future__ import annotations

import pytest

from mediaproxy import diskio
from mediaproxy.diskio import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, ChunkSizer


def test_grows_while_the_client_keeps_up_and_drops_when_it_waits() -> None:
    sizer = ChunkSizer()
    sizes = []
    for _ in range(6):
        sizer.observe(client_kept_up=True)
        sizes.append(sizer.size)
    assert sizes == [128 << 10, 256 << 10, 512 << 10, 1 << 20, MAX_CHUNK_BYTES, MAX_CHUNK_BYTES]
    sizer.observe(client_kept_up=False)
    assert sizer.size == MIN_CHUNK_BYTES


def test_the_shared_ceiling_caps_growth_but_never_below_the_minimum() -> None:
    ceiling = 200 << 10
    sizer = ChunkSizer(lambda: ceiling)
    for _ in range(5):
        sizer.observe(client_kept_up=True)
    assert sizer.size == 200 << 10
    ceiling = 1
    sizer.observe(client_kept_up=True)
    assert sizer.size == MIN_CHUNK_BYTES


def test_a_stream_grows_only_into_what_all_streams_together_leave_of_the_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sizer = ChunkSizer()
    sizer.ceiling = diskio._ceiling_for(sizer)
    monkeypatch.setattr(diskio, "_held_bytes", diskio.READ_BUDGET_BYTES)  # many streams
    sizer.observe(client_kept_up=True)
    assert sizer.size == MIN_CHUNK_BYTES
    monkeypatch.setattr(diskio, "_held_bytes", MIN_CHUNK_BYTES)  # this one alone
    for _ in range(5):
        sizer.observe(client_kept_up=True)
    assert sizer.size == MAX_CHUNK_BYTES
