"""Content-Type from the bytes themselves, so nobody declares "binary media types".

libmagic reads the first bytes and knows MP4 from WebM from MP3. It is unsure only among text
types (a CSV with semicolons is "text/plain"), so for text alone the file name's extension
breaks the tie. Text gets the charset libmagic detected, so browsers do not guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import threading
from collections.abc import Iterator

import magic

SNIFF_BYTES = 2048  # libmagic decides every media type we serve within the first 2 KiB
OCTET_STREAM = "application/octet-stream"
# libmagic maps its compiled database, and a sniff of unknown bytes touches most of it: a handle
# kept open holds those pages resident for good (bench/RESULTS.md, slow clients), while a fresh
# handle makes a sniff several times slower (it faults them in again). So a loop's handles stay
# open while sniffs keep coming (a function route may sniff every response) and are closed once
# none came for this long (the file route sniffs each file version once).
HANDLE_IDLE_S = 1.0


class _LoopHandles(threading.local):
    """The handles of the loop running on this thread (a handle is not safe to share)."""

    def __init__(self) -> None:
        self.handles: dict[str, magic.Magic] = {}
        self.last_used_s = 0.0
        self.closer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def get(self, kind: str, loop: asyncio.AbstractEventLoop) -> magic.Magic:
        self.last_used_s = loop.time()
        if self.loop is not loop or self.closer is None:
            if self.closer is not None:
                self.closer.cancel()  # a loop this thread ran before, done by now
            self.loop = loop
            self.closer = loop.call_later(HANDLE_IDLE_S, self._close_when_idle)
        handle = self.handles.get(kind)
        if handle is None:
            handle = self.handles[kind] = _open(kind)
        return handle

    def _close_when_idle(self) -> None:
        assert self.loop is not None
        idle_s = self.loop.time() - self.last_used_s
        if idle_s < HANDLE_IDLE_S:
            self.closer = self.loop.call_later(HANDLE_IDLE_S - idle_s, self._close_when_idle)
            return
        self.closer = None
        for handle in self.handles.values():
            _close(handle)
        self.handles.clear()


_loop_handles = _LoopHandles()


def _open(kind: str) -> magic.Magic:
    return magic.Magic(mime=kind == "mime", mime_encoding=kind == "encoding")


def _close(handle: magic.Magic) -> None:
    magic.magic_close(handle.cookie)
    handle.cookie = None  # its finaliser closes only a handle still open


@contextlib.contextmanager
def _magic(kind: str) -> Iterator[magic.Magic]:
    """A handle for one sniff: the running loop's (``HANDLE_IDLE_S``), or one of its own."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop to close a kept handle later
        handle = _open(kind)
        try:
            yield handle
        finally:
            _close(handle)
        return
    yield _loop_handles.get(kind, loop)


def _extension_type(name: str) -> str | None:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed


def content_type(head: bytes, name: str) -> str:
    """The media type of a representation whose first bytes are ``head``."""
    if not head:
        return _extension_type(name) or OCTET_STREAM
    with _magic("mime") as handle:
        sniffed: str = handle.from_buffer(head)
    if not sniffed.startswith("text/"):
        return sniffed if "/" in sniffed and not sniffed.startswith("inode/") else OCTET_STREAM
    guessed = _extension_type(name)
    media_type = (
        guessed if guessed and (guessed.startswith("text/") or guessed in _TEXTUAL) else sniffed
    )
    with _magic("encoding") as handle:
        encoding: str = handle.from_buffer(head)
    if encoding in ("utf-8", "us-ascii"):
        return f"{media_type}; charset=utf-8"
    return media_type


# Types that are text underneath though not text/*: the extension may name them.
_TEXTUAL = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/javascript",
        "application/xml",
        "image/svg+xml",
        "application/x-subrip",
    }
)
