"""The benchmark's files: where they live, and making them once.

Everything generated goes to bench/work/ (gitignored): the data files the
servers send, their configurations, their logs. The data is random bytes, so
no layer on the path can compress it, and it is written once and reused:
writing 1 GiB costs seconds, and the page cache keeps it between runs.
"""

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work"

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class DataFile:
    name: str
    size_bytes: int

    @property
    def url_path(self) -> str:
        """Every server in the benchmark serves the data directory under /files/."""
        return f"/files/{self.name}"


@dataclass(frozen=True)
class Workspace:
    root: Path
    big: DataFile
    medium: DataFile
    small: DataFile

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def server_dir(self, server_name: str) -> Path:
        """A private directory for one server's configuration, pid file and temp files."""
        path = self.root / "servers" / server_name
        path.mkdir(parents=True, exist_ok=True)
        return path


def prepare(big_size_bytes: int) -> Workspace:
    """Create the directories and data files (reusing those already right) and warm the cache."""
    big_name = "big.bin" if big_size_bytes == GiB else f"big-{big_size_bytes // MiB}MiB.bin"
    workspace = Workspace(
        root=WORK,
        big=DataFile(big_name, big_size_bytes),
        medium=DataFile("medium.bin", 4 * MiB),
        small=DataFile("small.bin", 4 * 1024),
    )
    workspace.data_dir.mkdir(parents=True, exist_ok=True)
    workspace.logs_dir.mkdir(parents=True, exist_ok=True)
    for data_file in (workspace.big, workspace.medium, workspace.small):
        path = workspace.data_dir / data_file.name
        _write_random_file(path, data_file.size_bytes)
        _read_into_page_cache(path)
    return workspace


def _write_random_file(path: Path, size_bytes: int) -> None:
    """Write `size_bytes` of random data to `path` unless a file of that size is there.

    The file is written under a temporary name and renamed, so an interrupted
    run never leaves a short file that a later run would take for complete.
    """
    if path.exists() and path.stat().st_size == size_bytes:
        return
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        remaining = size_bytes
        while remaining:
            block = os.urandom(min(MiB, remaining))
            out.write(block)
            remaining -= len(block)
    partial.rename(path)


def _read_into_page_cache(path: Path) -> None:
    """Read the file once, so that every server finds it in memory, not on disk."""
    buffer = bytearray(MiB)
    with open(path, "rb", buffering=0) as source:
        while source.readinto(buffer):
            pass
