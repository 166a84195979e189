"""The slice store on a real folder: slices visible only whole, the index rebuilt from the
folder at start-up (half-written, truncated and foreign files discarded), least recently used
slices evicted at the byte bound, a new version dropping every slice of the old."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from mediaproxy.integrations.cache.store import ObjectMeta, SliceStore

SLICE = 64 * 1024


def make_store(folder: Path, max_bytes: int = 100 * SLICE) -> SliceStore:
    store = SliceStore(folder, max_bytes=max_bytes, slice_bytes=SLICE)
    store.open()
    return store


def meta(key: str = "/o/a.mp4", etag: str = '"v1"', size: int = 3 * SLICE + 10) -> ObjectMeta:
    return ObjectMeta(
        key=key,
        etag=etag,
        size=size,
        fields=(("Content-Type", "video/mp4"),),
        confirmed_s=1000.0,
        lifetime_s=60.0,
    )


def fill(store: SliceStore, version: ObjectMeta, index: int, byte: bytes = b"x") -> bool:
    writer = store.begin_slice(version, index)
    writer.write(byte * store.slice_length(version, index))
    return writer.commit()


def read_slice(store: SliceStore, version: ObjectMeta, index: int) -> bytes | None:
    fd = store.open_slice(version, index)
    if fd is None:
        return None
    try:
        return os.pread(fd, SLICE + 1, 0)
    finally:
        os.close(fd)


def test_geometry() -> None:
    store = SliceStore(Path("/nonexistent"), max_bytes=10 * SLICE, slice_bytes=SLICE)
    version = meta()
    assert store.slice_count(version) == 4
    assert [store.slice_length(version, i) for i in range(4)] == [SLICE, SLICE, SLICE, 10]
    assert store.slice_count(meta(size=0)) == 0
    assert store.slice_count(meta(size=SLICE)) == 1


def test_a_slice_is_invisible_until_committed_whole(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    version = meta()
    store.put_meta(version)
    writer = store.begin_slice(version, 3)
    writer.write(b"0123456789")
    assert read_slice(store, version, 3) is None
    assert writer.commit()
    assert read_slice(store, version, 3) == b"0123456789"
    short = store.begin_slice(version, 0)
    short.write(b"x" * (SLICE - 1))
    assert not short.commit()  # a slice shorter than its length is never stored
    assert read_slice(store, version, 0) is None
    assert [p.name for p in store.folder(version.key).iterdir() if ".tmp-" in p.name] == []


def test_the_index_is_rebuilt_and_broken_files_discarded(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    version = meta()
    store.put_meta(version)
    for index in range(4):
        assert fill(store, version, index, bytes([65 + index]))
    folder = store.folder(version.key)
    # A crash mid-write, a truncated slice, a slice of another version, a broken object.
    (folder / f".tmp-{version.version}.1.dead").write_bytes(b"half")
    os.truncate(folder / f"{version.version}.2", 100)
    (folder / "0123456789abcdef.0").write_bytes(b"x" * SLICE)
    broken = tmp_path / "ab" / ("ab" + "0" * 62)
    broken.mkdir(parents=True)
    (broken / "meta.json").write_text("{not json")

    again = make_store(tmp_path)
    assert again.meta(version.key) == version
    assert [read_slice(again, version, i) is not None for i in range(4)] == [
        True,
        True,
        False,
        True,
    ]
    assert read_slice(again, version, 3) == b"D" * 10
    assert again.discarded == 4
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["meta.json", f"{version.version}.0", f"{version.version}.1", f"{version.version}.3"]
    )
    assert not broken.exists()
    assert again.size_bytes == store.size_bytes - SLICE  # slice 2 went


def test_a_starting_store_leaves_the_files_of_live_writers_alone(tmp_path: Path) -> None:
    """A worker (re)starting while another fills: it deletes abandoned temporary files only."""
    store = make_store(tmp_path)
    version, fresh = meta(), meta("/o/new.mp4")
    store.put_meta(version)
    writing = store.begin_slice(version, 0)
    writing.write(b"a" * 100)
    first_of_its_object = store.begin_slice(fresh, 0)  # its folder has no meta.json yet
    abandoned = store.folder(version.key) / f".tmp-{version.version}.1.dead"
    abandoned.write_bytes(b"half")

    again = make_store(tmp_path)
    assert not abandoned.exists()
    writing.write(b"a" * (SLICE - 100))
    first_of_its_object.write(b"b" * SLICE)
    assert writing.commit() and first_of_its_object.commit()
    assert read_slice(store, version, 0) == b"a" * SLICE
    assert read_slice(store, fresh, 0) == b"b" * SLICE
    assert again.discarded == 1


def _open_store(folder: Path, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    make_store(folder)


def test_stores_opening_one_folder_at_once_all_start(tmp_path: Path) -> None:
    """Workers starting together each rebuild their index while the others delete the same
    abandoned files: a file gone between listing and reading is no error."""
    store = make_store(tmp_path)
    for number in range(40):
        version = meta(f"/o/{number}")
        store.put_meta(version)
        fill(store, version, 0)
        for dead in range(25):
            (store.folder(version.key) / f".tmp-{version.version}.{dead}.dead").write_bytes(b"h")
    context = multiprocessing.get_context("fork")
    start = context.Barrier(6)
    workers = [context.Process(target=_open_store, args=(tmp_path, start)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [worker.exitcode for worker in workers] == [0] * 6
    assert not list(tmp_path.rglob(".tmp-*"))


def test_least_recently_used_slices_go_first_at_the_bound(tmp_path: Path) -> None:
    store = make_store(tmp_path, max_bytes=4 * SLICE)
    first, second = meta("/o/first", size=2 * SLICE), meta("/o/second", size=2 * SLICE)
    store.put_meta(first)
    store.put_meta(second)
    fill(store, first, 0)
    fill(store, first, 1)
    fill(store, second, 0)
    assert read_slice(store, first, 0) is not None  # used again: now the most recent
    fill(store, second, 1)  # over the bound (metas count too): first's slice 1 goes
    assert store.size_bytes <= 4 * SLICE
    assert store.evictions >= 1
    assert read_slice(store, first, 1) is None
    assert read_slice(store, second, 1) is not None
    assert len(list(store.folder(first.key).glob(f"{first.version}.*"))) == store.slices_stored - 2


def test_evicting_an_objects_last_slice_forgets_it(tmp_path: Path) -> None:
    store = make_store(tmp_path, max_bytes=2 * SLICE)
    first, second = meta("/o/first", size=SLICE), meta("/o/second", size=SLICE)
    store.put_meta(first)
    fill(store, first, 0)
    store.put_meta(second)
    fill(store, second, 0)
    assert store.meta(first.key) is None and not store.folder(first.key).exists()
    assert store.size_bytes <= 2 * SLICE


def test_a_new_etag_drops_every_slice_of_the_old_version(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    old = meta()
    store.put_meta(old)
    fill(store, old, 0)
    fill(store, old, 1)
    new = meta(etag='"v2"')
    writer = store.begin_slice(old, 2)  # a fill of the old version still running
    store.put_meta(new)
    assert read_slice(store, old, 0) is None and read_slice(store, new, 0) is None
    writer.write(b"x" * SLICE)
    assert not writer.commit()  # never mixed into the new version
    assert sorted(p.name for p in store.folder(new.key).iterdir()) == ["meta.json"]


def test_disk_full_is_its_own_error(tmp_path: Path) -> None:
    from mediaproxy.integrations.cache.store import DiskFull

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    store = make_store(tmp_path)
    version = meta()
    store.put_meta(version)
    writer = store.begin_slice(version, 0)
    os.close(writer.fd)
    writer.fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(DiskFull):
        writer.write(b"x" * 100)
    writer.abort()
