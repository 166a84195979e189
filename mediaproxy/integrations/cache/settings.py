"""The cache keys an ``http_proxy`` or ``s3`` route may set, checked at start-up.

The cache is opt-in: a route without ``cache_dir`` has none, and any other ``cache_*`` key
without it is a mistake worth refusing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mediaproxy.config import Table

KEYS = (
    "cache_dir",
    "cache_max_bytes",
    "cache_slice_bytes",
    "cache_min_uses",
    "cache_default_ttl",
    "cache_private",
    "x_cache",
)
MIB = 1024 * 1024


@dataclass(frozen=True)
class CacheSettings:
    directory: Path
    # Bytes on disk (slices and their metadata, rounded up to the block), all objects of the
    # route: nginx's proxy_cache_path max_size, which has no default; ours keeps a forgotten
    # setting from filling a disk.
    max_bytes: int = 1024 * MIB
    # nginx's slice module is usually set to 1m: a seek fetches at most one slice it does not
    # need, and a slice is one origin request of reasonable size.
    slice_bytes: int = MIB
    # nginx proxy_cache_min_uses: an object is stored from its n-th request on.
    min_uses: int = 1
    # Freshness when the origin gives none (RFC 9111 §4.2.2 leaves it to the cache): Varnish's
    # default_ttl is 120 s.
    default_ttl_s: float = 120.0
    # Responses to requests that carried the gateway's own credentials (a route with API keys
    # or signed URLs) are private unless the operator says the route's media is shared.
    private: bool = False
    x_cache: bool = True  # the X-Cache response field (HIT, MISS, REVALIDATED, BYPASS)


def read_cache_settings(table: Table) -> CacheSettings | None:
    if not table.has("cache_dir"):
        for key in KEYS:
            if table.has(key):
                raise table.error(key, "needs cache_dir (the cache is off without it)")
        return None
    directory = (table.path.parent / table.string("cache_dir")).resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise table.error("cache_dir", f"cannot create {directory}: {error.strerror}") from error
    if not os.access(directory, os.W_OK | os.X_OK):
        raise table.error("cache_dir", f"{directory} is not writable")
    slice_bytes = table.integer(
        "cache_slice_bytes", CacheSettings.slice_bytes, minimum=64 * 1024, maximum=64 * MIB
    )
    max_bytes = table.integer("cache_max_bytes", CacheSettings.max_bytes, minimum=1)
    if max_bytes < 2 * slice_bytes:
        raise table.error(
            "cache_max_bytes", f"must hold at least two slices ({2 * slice_bytes}), got {max_bytes}"
        )
    return CacheSettings(
        directory=directory,
        max_bytes=max_bytes,
        slice_bytes=slice_bytes,
        min_uses=table.integer("cache_min_uses", CacheSettings.min_uses, minimum=1),
        default_ttl_s=_ttl(table),
        private=table.boolean("cache_private", CacheSettings.private),
        x_cache=table.boolean("x_cache", CacheSettings.x_cache),
    )


def _ttl(table: Table) -> float:
    """Seconds, 0 allowed (revalidate every time), unlike the timers' keys."""
    value = table.raw("cache_default_ttl")
    if value is None:
        return CacheSettings.default_ttl_s
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**31:
        raise table.error("cache_default_ttl", f"must be a number of seconds >= 0, got {value!r}")
    return float(value)
