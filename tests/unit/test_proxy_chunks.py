"""How much the proxy reads from an origin at once: grown for fast clients, within a budget."""

from __future__ import annotations

import contextlib

import pytest

from mediaproxy.integrations.http_proxy.relay import (
    GROW_AFTER_SENDS,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    SEND_TARGET_S,
    ChunkSizer,
    relay_sizer,
)
from mediaproxy.streaming.chunks import ChunkBudget, DrainRate

MiB = 1024 * 1024


def relay_budget(total_bytes: int) -> ChunkBudget:
    return ChunkBudget(total_bytes, min_bytes=MIN_CHUNK_BYTES, max_bytes=MAX_CHUNK_BYTES)


def instant_sends(sizer: ChunkSizer, count: int) -> None:
    for _ in range(count):
        sizer.observe(sizer.size, 0.0, waited=False)


def test_a_fast_client_grows_to_the_largest_chunk() -> None:
    budget = relay_budget(2 * MiB)
    with relay_sizer(budget) as sizer:
        assert sizer.size == MIN_CHUNK_BYTES
        instant_sends(sizer, GROW_AFTER_SENDS - 1)
        assert sizer.size == MIN_CHUNK_BYTES  # one run of instant sends proves little
        instant_sends(sizer, 1)
        assert sizer.size == 2 * MIN_CHUNK_BYTES
        instant_sends(sizer, 100 * GROW_AFTER_SENDS)
        assert sizer.size == MAX_CHUNK_BYTES
        # Waiting briefly is still keeping up.
        sizer.observe(MAX_CHUNK_BYTES, SEND_TARGET_S / 2, waited=True)
        assert sizer.size == MAX_CHUNK_BYTES
    assert budget.held_bytes == 0


def test_a_slow_send_drops_to_what_the_client_drains_in_the_target_time() -> None:
    with relay_sizer(relay_budget(2 * MiB)) as sizer:
        instant_sends(sizer, 100 * GROW_AFTER_SENDS)
        sizer.observe(MAX_CHUNK_BYTES, 0.1, waited=True)  # ~10 MB/s
        assert sizer.size == int(MAX_CHUNK_BYTES / 0.1 * SEND_TARGET_S)
        sizer.observe(sizer.size, 4.0, waited=True)  # 256 KiB/s
        assert sizer.size == MIN_CHUNK_BYTES


def test_streams_grow_only_into_what_the_budget_has_left() -> None:
    budget = relay_budget(MiB + MIN_CHUNK_BYTES)
    with relay_sizer(budget) as first, relay_sizer(budget) as second:
        instant_sends(first, 100 * GROW_AFTER_SENDS)
        instant_sends(second, 100 * GROW_AFTER_SENDS)
        assert first.size + second.size == budget.total_bytes == budget.held_bytes
        assert second.size == MIN_CHUNK_BYTES
        first.observe(first.size, 10.0, waited=True)  # frees its share...
        instant_sends(second, 100 * GROW_AFTER_SENDS)
        assert second.size == MAX_CHUNK_BYTES  # ...for the other
    assert budget.held_bytes == 0


def test_the_smallest_chunk_is_always_allowed() -> None:
    budget = relay_budget(MIN_CHUNK_BYTES)
    with relay_sizer(budget) as first, relay_sizer(budget) as second:
        instant_sends(first, 10 * GROW_AFTER_SENDS)
        assert (first.size, second.size) == (MIN_CHUNK_BYTES, MIN_CHUNK_BYTES)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def following_budget(clock: FakeClock) -> ChunkBudget:
    return ChunkBudget(
        2 * MiB,
        min_bytes=MIN_CHUNK_BYTES,
        max_bytes=MAX_CHUNK_BYTES,
        drain=DrainRate(clock, 0.25),
        horizon_s=0.02,
        ceiling_bytes=32 * MiB,
    )


def test_the_drain_rate_is_the_last_complete_window() -> None:
    clock = FakeClock()
    rate = DrainRate(clock, 0.25)
    for _ in range(10):
        rate.record(1_000_000)
        clock.now += 0.05
    assert rate.bytes_per_s == pytest.approx(20_000_000)
    clock.now += 10  # nothing moved since: the next record closes a window that says so
    rate.record(1)
    assert rate.bytes_per_s < 1_000_000


def test_many_fast_clients_grow_past_the_floor() -> None:
    """32 clients that keep up, draining ~1.6 GB/s between them: far more than 2 MiB in chunks."""
    clock = FakeClock()
    budget = following_budget(clock)
    with contextlib.ExitStack() as stack:
        sizers = [stack.enter_context(relay_sizer(budget)) for _ in range(32)]
        for _ in range(200):
            for sizer in sizers:
                sizer.observe(sizer.size, 0.0, waited=False)
            clock.now += 0.005
        assert budget.total_bytes > 16 * MiB
        assert sum(sizer.size for sizer in sizers) > 16 * MiB
        assert min(sizer.size for sizer in sizers) >= 256 * 1024
    assert budget.held_bytes == 0


def test_many_slow_clients_keep_the_budget_at_its_floor() -> None:
    """200 clients at 256 KiB/s, whose first writes all land at once as if they were fast."""
    clock = FakeClock()
    budget = following_budget(clock)
    with contextlib.ExitStack() as stack:
        sizers = [stack.enter_context(relay_sizer(budget)) for _ in range(200)]
        for _ in range(GROW_AFTER_SENDS * 4):
            for sizer in sizers:
                sizer.observe(sizer.size, 0.0, waited=False)
            clock.now += MIN_CHUNK_BYTES / (256 * 1024)
        assert budget.total_bytes < 4 * MiB
        assert budget.held_bytes == 200 * MIN_CHUNK_BYTES
    assert budget.held_bytes == 0
