"""Counters shared by every worker process of one instance: a small table in shared memory.

The parent process creates the table before it forks the workers, so each inherits the same
mapping (an unlinked temporary file mapped MAP_SHARED). Every operation runs under an
exclusive ``lockf`` lock on that file: a POSIX record lock belongs to a process, so forked
workers exclude each other, and the kernel releases it if its holder dies, so a worker killed
mid-operation cannot wedge the others. An operation holds the lock for a few struct reads and
writes, never across an await.

The table is an open-addressing hash of named entries (a stream cap's name, a plan key's rate
or quota). Each entry holds:

- ``running``: one count per worker column. A worker only ever changes its own column, and
  the parent zeroes a column when it reaps its worker: a crashed worker's stream slots come
  back at once, without leases or timeouts. A cap compares the sum of the columns.
- ``tat``: a plan key's GCRA arrival time (``streaming.usage``).
- ``period`` and ``amount``: a quota's period number and the bytes counted in it.

Entries are never removed; the table is sized for the names one config can hold several times
over (a reload adds names), and refuses new names when full (``TableFull``), which the caller
treats as any shared-state failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import struct
import tempfile
from collections.abc import Sequence
from contextlib import AbstractContextManager

from mediaproxy.streaming.usage import Quota, Rate, Refusal, gcra, period_end_s, period_number

_HEAD = struct.Struct("=16sdqq")  # name digest, tat, period, amount
_COUNT = struct.Struct("=i")
_EMPTY = bytes(16)
DEFAULT_ENTRIES = 4096


class TableFull(Exception):
    """No room for another name in the shared table."""


class SharedTable:
    """Named counters in memory shared by forked processes; ``column`` is this process's."""

    def __init__(self, columns: int, entries: int = DEFAULT_ENTRIES) -> None:
        self.columns = columns
        self.entries = entries
        self.column = 0
        self._entry_bytes = _HEAD.size + _COUNT.size * columns
        self._file = tempfile.TemporaryFile(prefix="mediaproxy-shared-")
        size = self._entry_bytes * entries
        self._file.truncate(size)
        self._fd = self._file.fileno()
        self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED)
        self._offsets: dict[str, int] = {}  # this process's cache: entries never move

    def close(self) -> None:
        self._map.close()
        self._file.close()

    def __enter__(self) -> SharedTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- stream slots -----------------------------------------------------------------------

    def acquire(self, caps: Sequence[tuple[str, int]]) -> int | None:
        """Count one more stream under every name, unless one is at its cap (0: none).

        Returns None when counted, else the index in ``caps`` of the first name at its cap
        (nothing counted then).
        """
        with self._locked():
            offsets = [self._offset(name) for name, _ in caps]
            for index, ((_, cap), offset) in enumerate(zip(caps, offsets)):
                if cap and self._running(offset) >= cap:
                    return index
            for offset in offsets:
                self._add_running(offset, self.column, 1)
        return None

    def release(self, names: Sequence[str]) -> None:
        with self._locked():
            for name in names:
                self._add_running(self._offset(name), self.column, -1)

    def running(self, name: str) -> int:
        """Streams counted under ``name`` by every worker."""
        with self._locked():
            return self._running(self._offset(name))

    def reclaim(self, column: int) -> None:
        """A worker is gone: whatever its column still counts is free again."""
        zero = _COUNT.pack(0)
        with self._locked():
            for entry in range(self.entries):
                base = entry * self._entry_bytes
                if self._map[base : base + 16] != _EMPTY:
                    at = base + _HEAD.size + column * _COUNT.size
                    self._map[at : at + _COUNT.size] = zero

    # --- plans: rates and quotas ------------------------------------------------------------

    def take(self, name: str, rate: Rate, now_s: float) -> float:
        """One request against ``name``'s rate: 0 if admitted, else the seconds to wait."""
        with self._locked():
            offset = self._offset(name)
            digest, tat, period, amount = _HEAD.unpack_from(self._map, offset)
            new_tat, wait_s = gcra(rate, tat, now_s)
            if not wait_s:
                _HEAD.pack_into(self._map, offset, digest, new_tat, period, amount)
        return wait_s

    def admit_key(
        self,
        key: str,
        rate: Rate | None,
        quotas: Sequence[Quota],
        max_streams: int,
        now_s: float,
        reserve_bytes: int = 0,
    ) -> Refusal | None:
        """One request of a plan's key: refused by a spent quota, a full stream cap or the
        rate, in that order, changing nothing; or admitted, its rate and stream counted (the
        stream under ``key_streams(key)``, to be released) and ``reserve_bytes`` charged to
        each quota."""
        with self._locked():
            counted = []
            for quota in quotas:
                offset = self._offset(f"{quota.period} {key}")
                digest, tat, period, used = _HEAD.unpack_from(self._map, offset)
                current = period_number(quota.period, now_s)
                used = used if period == current else 0
                if used >= quota.limit_bytes:
                    return Refusal(quota.period, period_end_s(quota.period, now_s) - now_s)
                counted.append((offset, digest, tat, current, used))
            streams = self._offset(key_streams(key))
            if max_streams and self._running(streams) >= max_streams:
                return Refusal("streams", 0.0)
            if rate is not None:
                offset = self._offset(f"rate {key}")
                digest, tat, period, amount = _HEAD.unpack_from(self._map, offset)
                new_tat, wait_s = gcra(rate, tat, now_s)
                if wait_s:
                    return Refusal("rate", wait_s)
                _HEAD.pack_into(self._map, offset, digest, new_tat, period, amount)
            self._add_running(streams, self.column, 1)
            for offset, digest, tat, current, used in counted:
                _HEAD.pack_into(self._map, offset, digest, tat, current, used + reserve_bytes)
        return None

    def charge(self, name: str, period: int, amount: int) -> int:
        """Add ``amount`` bytes to ``name``'s count in ``period``; the count after it."""
        with self._locked():
            offset = self._offset(name)
            digest, tat, stored_period, stored = _HEAD.unpack_from(self._map, offset)
            total = (stored if stored_period == period else 0) + amount
            _HEAD.pack_into(self._map, offset, digest, tat, period, total)
        return total

    # --- the table ----------------------------------------------------------------------------

    def _locked(self) -> AbstractContextManager[None]:
        return _Lock(self._fd)

    def _offset(self, name: str) -> int:
        """The entry of ``name``, claimed if new (under the lock)."""
        cached = self._offsets.get(name)
        if cached is not None:
            return cached
        digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        start = int.from_bytes(digest[:8], "little") % self.entries
        for probe in range(self.entries):
            base = ((start + probe) % self.entries) * self._entry_bytes
            held = self._map[base : base + 16]
            if held == _EMPTY:
                self._map[base : base + 16] = digest
            elif held != digest:
                continue
            self._offsets[name] = base
            return base
        raise TableFull(f"the shared table holds {self.entries} names already")

    def _running(self, offset: int) -> int:
        start = offset + _HEAD.size
        return sum(
            count
            for (count,) in _COUNT.iter_unpack(
                self._map[start : start + _COUNT.size * self.columns]
            )
        )

    def _add_running(self, offset: int, column: int, delta: int) -> None:
        at = offset + _HEAD.size + column * _COUNT.size
        (count,) = _COUNT.unpack_from(self._map, at)
        _COUNT.pack_into(self._map, at, count + delta)


class PrivateTable(SharedTable):
    """The table of an instance that is one process: no other process to exclude, so no lock
    (each operation runs on the event loop's thread and never awaits). A stream's admission
    and its end each take the lock: two system calls apiece that one process does not need."""

    def _locked(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


def key_streams(key: str) -> str:
    """The table's name for a plan key's running streams."""
    return f"key streams {key}"


class _Lock:
    """The table's lock for one ``with`` block."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
