"""Streaming gzip and zstd for any integration's response, flushed chunk by chunk.

The Exchange asks ``begin`` when a response starts (the decision itself is the pure
``mediaproxy.http.encoding.plan_coding``) and, if it gets an encoder, passes every chunk
through it. Each chunk is compressed *and flushed* (zlib ``Z_SYNC_FLUSH``, zstd
``FLUSH_BLOCK``), so what the integration sent is decodable by the client at once: a token
stream or an event stream stays live, at a cost of a few bytes per chunk.

Levels: 1 for both. nginx's default ``gzip_comp_level`` is 1, and on the orders CSV level 1
is several times faster than gzip 6 for a ratio only a little lower (bench/RESULTS.md,
"Figures behind code comments"). Compression runs on the event loop: one export batch costs
a few milliseconds of gzip 1.

zstd needs the ``zstandard`` package (the ``zstd`` extra); without it only gzip is offered.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Protocol

from mediaproxy.http.encoding import encoded_fields, plan_coding

try:
    import zstandard
except ImportError:  # the optional `zstd` extra
    zstandard = None  # type: ignore[assignment]

GZIP_LEVEL = 1
ZSTD_LEVEL = 1
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip container, not a bare zlib stream

# In the server's order of preference when the client weighs codings equally.
OFFERED = ("zstd", "gzip") if zstandard is not None else ("gzip",)


class Encoder(Protocol):
    def compress(self, chunk: bytes) -> bytes:
        """Compress ``chunk`` and flush it: the output decodes to every byte given so far."""

    def finish(self) -> bytes:
        """The end of the compressed stream."""


class GzipEncoder:
    def __init__(self) -> None:
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)

    def compress(self, chunk: bytes) -> bytes:
        return self._compressor.compress(chunk) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


class ZstdEncoder:
    def __init__(self) -> None:
        assert zstandard is not None
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()

    def compress(self, chunk: bytes) -> bytes:
        assert zstandard is not None
        return self._compressor.compress(chunk) + self._compressor.flush(
            zstandard.COMPRESSOBJ_FLUSH_BLOCK
        )

    def finish(self) -> bytes:
        return self._compressor.flush()


_ENCODERS: dict[str, type[GzipEncoder] | type[ZstdEncoder]] = {
    "gzip": GzipEncoder,
    "zstd": ZstdEncoder,
}


def begin(
    status: int,
    fields: Iterable[tuple[str, str]],
    accept_encoding: str | None,
    send_body: bool,
    min_bytes: int = 0,
) -> tuple[list[tuple[str, str]], Encoder | None]:
    """The response's header fields as they must go out, and its encoder if it is compressed.

    ``send_body`` is False for HEAD: the fields are those a GET would get, without an encoder.
    A body of known length below ``min_bytes`` is not compressed (the route's
    ``compress_min_bytes``).
    """
    fields = list(fields)
    plan = plan_coding(status, fields, accept_encoding, OFFERED, min_bytes)
    encoder = _ENCODERS[plan.coding]() if plan.coding is not None and send_body else None
    return encoded_fields(fields, plan), encoder
