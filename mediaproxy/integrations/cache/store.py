"""Aligned slices of object versions on disk, bounded in bytes, least recently used first out.

Layout under the cache directory: one folder per object (``ab/abcdef…``: the SHA-256 of its
key, route prefix + normalised path + query), holding ``meta.json`` (key, ETag, size, stored
response fields, freshness) and one file per slice, ``<version>.<index>``, the version being
a hash of the ETag. Slice ``i`` holds bytes ``[i * slice_bytes, min((i + 1) * slice_bytes,
size))`` of that version, nothing else.

Crash safety: every file is written under a temporary name in its own folder and renamed
into place only once complete and checked against the length it must have; a rename is
atomic, so a reader sees a whole slice or none. A process killed mid-write leaves only
temporary files, which ``open`` deletes; ``open`` also rebuilds the index from the folder and
deletes any slice whose length is not its index's (truncated by a crash of the file system,
or by hand), any slice of another version than its object's, and any object whose meta does
not parse. Nothing is journalled: the folder is the index.

A writer holds an exclusive ``flock`` on its temporary file until the file is renamed or
removed, and ``open`` deletes only temporary files whose lock it can take: a worker that
(re)starts, or a new generation after a reload, leaves the files other workers are writing
alone. Several stores opening at once delete the same abandoned files; a file gone between
listing and reading is no error.

Size: what the slices and metas take on disk (lengths rounded up to the file system's block)
stays under ``max_bytes``; committing a slice evicts the least recently used slices until it
does. Several worker processes share the folder safely (every change is a rename or an
unlink, and an open descriptor outlives an unlink), each with its own index (what it found
at start-up, and what it stored since) bounded by ``max_bytes``: N processes may keep up to
N times that in the folder. When
one worker evicts an object another is filling, that fill's slice is simply not stored
(``commit`` answers False); its readers, on their own descriptors, still get every byte.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger("mediaproxy")

_META = "meta.json"
# Starts the name of a version known by Last-Modified only: an entity-tag starts with '"' or
# 'W/', so the two never meet.
LAST_MODIFIED_TAG = "lm:"
_TEMPORARY = ".tmp-"


@dataclass(frozen=True)
class ObjectMeta:
    """One stored object version: what a response from slices needs besides the bytes."""

    key: str
    # What names the version: its strong ETag, or for an object the origin gives none,
    # LAST_MODIFIED_TAG + its Last-Modified (then every slice comes from one whole response).
    etag: str
    size: int
    # The origin's end-to-end response fields worth repeating (Content-Type, Last-Modified,
    # Cache-Control, ...), without framing ones (Content-Length, Content-Range).
    fields: tuple[tuple[str, str], ...]
    # Wall-clock seconds when the origin last confirmed this version, and for how long after
    # it stays fresh (RFC 9111 §4.2).
    confirmed_s: float
    lifetime_s: float

    @property
    def entity_tag(self) -> str | None:
        """The origin's ETag, None for a version named by its Last-Modified."""
        return None if self.etag.startswith(LAST_MODIFIED_TAG) else self.etag

    @property
    def version(self) -> str:
        return hashlib.sha256(self.etag.encode("latin-1")).hexdigest()[:16]

    def fresh(self, now_s: float) -> bool:
        return now_s - self.confirmed_s < self.lifetime_s

    def age_s(self, now_s: float) -> int:
        return max(0, int(now_s - self.confirmed_s))

    def confirmed(self, now_s: float, lifetime_s: float) -> ObjectMeta:
        return replace(self, confirmed_s=now_s, lifetime_s=lifetime_s)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "key": self.key,
                "etag": self.etag,
                "size": self.size,
                "fields": [list(field) for field in self.fields],
                "confirmed_s": self.confirmed_s,
                "lifetime_s": self.lifetime_s,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ObjectMeta:
        """Raises ValueError (or a subclass) for anything this class did not write."""
        value = json.loads(data)
        meta = cls(
            key=_text(value["key"]),
            etag=_text(value["etag"]),
            size=int(_number(value["size"], int)),
            fields=tuple((_text(name), _text(text)) for name, text in value["fields"]),
            confirmed_s=float(_number(value["confirmed_s"], float)),
            lifetime_s=float(_number(value["lifetime_s"], float)),
        )
        if meta.size < 0:
            raise ValueError("negative size")
        return meta


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _number(value: object, kind: type[int] | type[float]) -> int | float:
    allowed = (int,) if kind is int else (int, float)
    if not isinstance(value, allowed) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    return value


class DiskFull(OSError):
    """The cache's file system took no more bytes: serve uncached."""


# Out of room: the file system's, a quota's, or the largest file this process may write
# (RLIMIT_FSIZE, with SIGXFSZ ignored).
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def _full_is_disk_full() -> Iterator[None]:
    """Raise an out-of-room OSError as DiskFull, any other as it is."""
    try:
        yield
    except OSError as error:
        if error.errno in _FULL and not isinstance(error, DiskFull):
            raise DiskFull(error.errno, error.strerror) from error
        raise


def _create_temporary(folder: Path, stem: str) -> tuple[Path, int]:
    """A new file under a temporary name in ``folder`` (created if need be), locked for as
    long as the returned descriptor is open."""
    while True:
        path = folder / f"{_TEMPORARY}{stem}.{secrets.token_hex(4)}"
        try:
            with _full_is_disk_full():
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # another process removed the folder since the mkdir
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return path, fd
        except (BlockingIOError, FileNotFoundError):
            pass  # a starting store took it for abandoned in the instant before the lock
        os.close(fd)


def _remove_if_abandoned(path: Path) -> bool:
    """Delete a temporary file nobody writes any more (its lock is free); True if this call
    deleted it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # renamed into place, or deleted by another store
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # being written
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def _write_whole(folder: Path, name: str, data: bytes) -> None:
    """``folder/name`` holding ``data``, replaced at once: written under a temporary name
    first."""
    while True:
        path, fd = _create_temporary(folder, name)
        try:
            with _full_is_disk_full():
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.replace(path, folder / name)
            return
        except FileNotFoundError:  # the folder went (another process dropped the object)
            continue
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)


def _names(folder: Path) -> list[str]:
    """What ``folder`` holds; nothing if another process removed it."""
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


class SliceWriter:
    """One slice being written under a temporary name; ``commit`` makes it visible."""

    def __init__(self, store: SliceStore, meta: ObjectMeta, index: int) -> None:
        self._store, self.meta, self.index = store, meta, index
        self.length = store.slice_length(meta, index)
        self.path, self.fd = _create_temporary(store.folder(meta.key), f"{meta.version}.{index}")
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; DiskFull when the file system is out of room (``written`` then
        counts the bytes that did fit)."""
        view = memoryview(data)
        while view:
            with _full_is_disk_full():
                done = os.pwrite(self.fd, view, self.written)
            self.written += done
            view = view[done:]

    def commit(self) -> bool:
        """Rename into place if the slice has exactly its length; True if it is now stored.
        The lock is held until the rename, so no starting store takes the file for abandoned."""
        try:
            if self.written == self.length and os.fstat(self.fd).st_size == self.length:
                return self._store._commit(self)
            self.path.unlink(missing_ok=True)
            return False
        except FileNotFoundError:  # another process evicted the object meanwhile
            return False
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        finally:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        if self.fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1


class SliceStore:
    """The slices of every object version under one folder, and their index in memory."""

    def __init__(self, directory: Path, *, max_bytes: int, slice_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.slice_bytes = slice_bytes
        self.block_bytes = 4096
        self._metas: dict[str, ObjectMeta] = {}
        # (object key, slice index) -> bytes on disk, least recently used first.
        self._slices: collections.OrderedDict[tuple[str, int], int] = collections.OrderedDict()
        self._held: dict[str, set[int]] = {}  # object key -> its stored slice indices
        self._meta_bytes: dict[str, int] = {}
        self.size_bytes = 0
        self.evictions = 0
        self.discarded = 0  # files found broken or half-written at start-up

    # -- start-up ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create the folder if need be and rebuild the index from what it holds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.block_bytes = max(512, os.statvfs(self.directory).f_frsize)
        found: list[tuple[float, str, int, int]] = []
        for outer in _names(self.directory):
            if len(outer) == 2:
                for name in _names(self.directory / outer):
                    found += self._load_object(self.directory / outer / name)
        for _, key, index, size in sorted(found):  # oldest first: least recently used
            self._add(key, index, size)
        self._evict()

    def _load_object(self, folder: Path) -> list[tuple[float, str, int, int]]:
        names = _names(folder)
        for name in names:
            if name.startswith(_TEMPORARY) and _remove_if_abandoned(folder / name):
                self.discarded += 1
        slices = [name for name in names if name != _META and not name.startswith(_TEMPORARY)]
        try:
            data = (folder / _META).read_bytes()
            meta = ObjectMeta.from_json(data)
            if self.folder(meta.key) != folder:
                raise ValueError("meta of another object")
        except FileNotFoundError:
            # An object's first slice being written before its meta, or an object another
            # process is removing: nothing to index, and slices without a meta are no use.
            self._remove_object(folder, slices)
            return []
        except (OSError, ValueError, KeyError, TypeError):
            self.discarded += 1
            (folder / _META).unlink(missing_ok=True)
            self._remove_object(folder, slices)
            return []
        self._metas[meta.key] = meta
        self._meta_bytes[meta.key] = self._on_disk(len(data))
        self.size_bytes += self._meta_bytes[meta.key]
        found = []
        for name in slices:
            path = folder / name
            index = self._slice_index(meta, name)
            try:
                info = path.stat()
            except FileNotFoundError:  # another store discarded it, or another worker evicted it
                continue
            if index is None or info.st_size != self.slice_length(meta, index):
                self.discarded += 1
                path.unlink(missing_ok=True)
                continue
            found.append((info.st_mtime, meta.key, index, self._on_disk(info.st_size)))
        return found

    @staticmethod
    def _remove_object(folder: Path, slices: list[str]) -> None:
        """Delete the slices of an object without a meta, and its folder once empty (a live
        writer's temporary file keeps it)."""
        for name in slices:
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()

    def _slice_index(self, meta: ObjectMeta, name: str) -> int | None:
        version, dot, digits = name.partition(".")
        if version != meta.version or not dot or not (digits.isascii() and digits.isdigit()):
            return None
        index = int(digits)
        return index if index < self.slice_count(meta) else None

    # -- geometry ---------------------------------------------------------------------------

    def slice_count(self, meta: ObjectMeta) -> int:
        return -(-meta.size // self.slice_bytes)

    def slice_length(self, meta: ObjectMeta, index: int) -> int:
        return min(self.slice_bytes, meta.size - index * self.slice_bytes)

    def folder(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return self.directory / digest[:2] / digest

    def _slice_path(self, meta: ObjectMeta, index: int) -> Path:
        return self.folder(meta.key) / f"{meta.version}.{index}"

    def _on_disk(self, length: int) -> int:
        return -(-length // self.block_bytes) * self.block_bytes

    # -- objects ----------------------------------------------------------------------------

    def meta(self, key: str) -> ObjectMeta | None:
        return self._metas.get(key)

    def put_meta(self, meta: ObjectMeta) -> None:
        """Record a version (or its new freshness); a new ETag drops every slice of the old."""
        old = self._metas.get(meta.key)
        if old is not None and old.etag != meta.etag:
            self._drop_slices(old)
        data = meta.to_json()
        _write_whole(self.folder(meta.key), _META, data)
        self._metas[meta.key] = meta
        self.size_bytes += self._on_disk(len(data)) - self._meta_bytes.get(meta.key, 0)
        self._meta_bytes[meta.key] = self._on_disk(len(data))

    def drop(self, key: str) -> None:
        """Forget an object entirely (its origin no longer serves it the cacheable way)."""
        meta = self._metas.pop(key, None)
        if meta is None:
            return
        self._drop_slices(meta)
        self.size_bytes -= self._meta_bytes.pop(key, 0)
        shutil.rmtree(self.folder(key), ignore_errors=True)

    def _drop_slices(self, meta: ObjectMeta) -> None:
        for index in sorted(self._held.get(meta.key, ())):
            self._remove(meta.key, index)
            self._slice_path(meta, index).unlink(missing_ok=True)

    def _add(self, key: str, index: int, size: int) -> None:
        self._remove(key, index)
        self._slices[(key, index)] = size
        self._held.setdefault(key, set()).add(index)
        self.size_bytes += size

    def _remove(self, key: str, index: int) -> None:
        size = self._slices.pop((key, index), None)
        if size is None:
            return
        self.size_bytes -= size
        held = self._held[key]
        held.discard(index)
        if not held:
            del self._held[key]

    # -- slices -----------------------------------------------------------------------------

    def has_slice(self, meta: ObjectMeta, index: int) -> bool:
        current = self._metas.get(meta.key)
        return (
            current is not None and current.etag == meta.etag and (meta.key, index) in self._slices
        )

    def open_slice(self, meta: ObjectMeta, index: int) -> int | None:
        """A descriptor on a stored slice (the caller closes it), marked recently used; None
        when it is not stored (never stored, evicted, or removed behind our back)."""
        if not self.has_slice(meta, index):
            return None
        try:
            fd = os.open(self._slice_path(meta, index), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # another process evicted it
            self._remove(meta.key, index)
            return None
        self._slices.move_to_end((meta.key, index))
        return fd

    def begin_slice(self, meta: ObjectMeta, index: int) -> SliceWriter:
        return SliceWriter(self, meta, index)

    def _commit(self, writer: SliceWriter) -> bool:
        meta = writer.meta
        current = self._metas.get(meta.key)
        if current is not None and current.etag != meta.etag:
            writer.path.unlink(missing_ok=True)  # the version changed while it was written
            return False
        if current is None:  # its other slices were evicted meanwhile, and the meta with them
            self.put_meta(meta)
        with _full_is_disk_full():
            os.replace(writer.path, self._slice_path(meta, writer.index))
        self._add(meta.key, writer.index, self._on_disk(writer.length))
        self._evict()
        return True

    def _evict(self) -> None:
        while self.size_bytes > self.max_bytes and self._slices:
            key, index = next(iter(self._slices))
            self._remove(key, index)
            self.evictions += 1
            meta = self._metas[key]
            self._slice_path(meta, index).unlink(missing_ok=True)
            if key not in self._held:
                self.drop(key)
        if self.size_bytes > self.max_bytes:
            for key in list(self._metas):  # metas alone over the bound: a tiny max_bytes
                self.drop(key)

    @property
    def slices_stored(self) -> int:
        return len(self._slices)
