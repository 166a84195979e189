"""The instance's shared table: caps hold across forked processes, a dead one's slots return."""

from __future__ import annotations

import os
import signal

import pytest

from mediaproxy.server.shared_table import PrivateTable, SharedTable, TableFull
from mediaproxy.streaming.usage import Rate


def in_child(table: SharedTable, column: int, caps: list[tuple[str, int]]) -> int:
    """Fork a process on ``column`` that acquires ``caps`` and then waits to be killed."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        table.column = column
        refused = table.acquire(caps)
        os.write(writer, b"r" if refused is not None else b"a")
        signal.pause()
        os._exit(0)
    os.close(writer)
    assert os.read(reader, 1) == b"a"
    os.close(reader)
    return pid


def test_a_cap_holds_across_processes_and_a_reaped_column_comes_back() -> None:
    with SharedTable(columns=3, entries=16) as table:
        check_columns(table)


def check_columns(table: SharedTable) -> None:
    child = in_child(table, 1, [("streams", 2)])
    assert table.acquire([("streams", 2)]) is None  # column 0: the second of two
    assert table.acquire([("other", 0), ("streams", 2)]) == 1
    assert table.running("other") == 0  # a refusal counts nothing
    assert table.running("streams") == 2
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    table.reclaim(1)
    assert table.running("streams") == 1
    assert table.acquire([("streams", 2)]) is None
    table.release(["streams", "streams"])
    assert table.running("streams") == 0


def test_a_rate_and_a_quota_are_shared_by_name() -> None:
    with SharedTable(columns=1, entries=16) as table:
        check_rate_and_quota(table)


def test_a_one_process_table_counts_as_the_shared_one() -> None:
    with PrivateTable(columns=1, entries=16) as table:
        check_rate_and_quota(table)
        assert table.acquire([("streams", 1)]) is None
        assert table.acquire([("streams", 1)]) == 0
        table.release(["streams"])
        assert table.running("streams") == 0


def check_rate_and_quota(table: SharedTable) -> None:
    rate = Rate(per_second=2, burst=2)
    assert [table.take("key", rate, 100.0) for _ in range(3)] == [0, 0, 0.5]
    assert table.take("another", rate, 100.0) == 0
    assert table.charge("bytes", period=7, amount=10) == 10
    assert table.charge("bytes", period=7, amount=5) == 15
    assert table.charge("bytes", period=8, amount=1) == 1  # a new period starts at zero


def test_a_full_table_refuses_new_names_only() -> None:
    with SharedTable(columns=1, entries=2) as table:
        table.acquire([("a", 0), ("b", 0)])
        with pytest.raises(TableFull):
            table.acquire([("c", 0)])
        assert table.acquire([("a", 0)]) is None
