"""Content sniffing: the media type from the first bytes, and no database left mapped after."""

from __future__ import annotations

import asyncio
import os

import magic
import pytest

from mediaproxy.streaming import sniff


def resident_database_kib() -> int:
    """How much of the compiled magic databases this process has mapped is resident now."""
    total_kib = 0
    in_database = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's own line
                in_database = line.rstrip().endswith(".mgc")
            elif first == "Rss:" and in_database:
                total_kib += int(line.split()[1])
    return total_kib


def database_touched_kib() -> int:
    """How much of the database one sniff of unknown bytes makes resident (skip if none)."""
    probe = magic.Magic(mime=True)
    probe.from_buffer(os.urandom(2048))
    touched_kib = resident_database_kib()
    del probe
    touched_kib -= resident_database_kib()
    if touched_kib < 1024:
        pytest.skip("this libmagic reads its database instead of mapping it")
    return touched_kib


MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(2000)


@pytest.mark.parametrize(
    "head, name, media_type",
    [
        (MP4_HEAD, "clip.bin", "video/mp4"),
        (os.urandom(2048), "noise", "application/octet-stream"),
        (b"a,b\n1,2\n", "table.csv", "text/csv; charset=utf-8"),
        (b"", "empty.txt", "text/plain"),
    ],
)
def test_content_type(head: bytes, name: str, media_type: str) -> None:
    assert sniff.content_type(head, name) == media_type


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc")
def test_the_database_does_not_stay_resident_after_a_sniff() -> None:
    """A sniff of unknown bytes touches most of the database; a handle kept open keeps it all."""
    touched_kib = database_touched_kib()

    sniff.content_type(os.urandom(2048), "noise")
    sniff.content_type(b"a,b\n1,2\n", "table.csv")

    assert resident_database_kib() < touched_kib / 4


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc")
def test_a_loop_keeps_its_handles_while_sniffs_come_and_closes_them_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A route that sniffs every response does not pay for a fresh handle each time."""
    monkeypatch.setattr(sniff, "HANDLE_IDLE_S", 0.2)

    async def sniffing() -> tuple[int, int, int]:
        sniff.content_type(os.urandom(2048), "noise")
        kept_kib = resident_database_kib()
        for _ in range(4):
            await asyncio.sleep(0.1)  # each within the idle time of the one before
            sniff.content_type(os.urandom(2048), "noise")
        still_kept_kib = resident_database_kib()
        await asyncio.sleep(0.5)
        return kept_kib, still_kept_kib, resident_database_kib()

    touched_kib = database_touched_kib()
    baseline_kib = resident_database_kib()
    kept_kib, still_kept_kib, after_kib = asyncio.run(sniffing())
    assert kept_kib - baseline_kib > touched_kib / 2
    assert still_kept_kib - baseline_kib > touched_kib / 2
    assert after_kib - baseline_kib < touched_kib / 4
