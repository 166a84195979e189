"""Content-Type from the bytes themselves, so nobody declares "binary media types".

libmagic reads the first bytes and knows MP4 from WebM from MP3. It is unsure only among text
types (a CSV with semicolons is "text/plain"), so for text alone the file name's extension
breaks the tie. Text gets the charset libmagic detected, so browsers do not guess.
"""

from __future__ import annotations

import mimetypes
import threading

import magic

SNIFF_BYTES = 2048  # libmagic decides every media type we serve within the first 2 KiB
OCTET_STREAM = "application/octet-stream"

# A magic handle is not safe to share between threads; one per thread is opened once.
_handles = threading.local()


def _magic(kind: str) -> magic.Magic:
    handle: magic.Magic | None = getattr(_handles, kind, None)
    if handle is None:
        handle = magic.Magic(mime=kind == "mime", mime_encoding=kind == "encoding")
        setattr(_handles, kind, handle)
    return handle


def _extension_type(name: str) -> str | None:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed


def content_type(head: bytes, name: str) -> str:
    """The media type of a representation whose first bytes are ``head``."""
    if not head:
        return _extension_type(name) or OCTET_STREAM
    sniffed: str = _magic("mime").from_buffer(head)
    if not sniffed.startswith("text/"):
        return sniffed if "/" in sniffed and not sniffed.startswith("inode/") else OCTET_STREAM
    guessed = _extension_type(name)
    media_type = (
        guessed if guessed and (guessed.startswith("text/") or guessed in _TEXTUAL) else sniffed
    )
    encoding: str = _magic("encoding").from_buffer(head)
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
