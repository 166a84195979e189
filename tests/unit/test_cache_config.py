"""The cache keys of an http_proxy route: off by default, defaults, and a refusal for each bad
value naming the file and the dotted key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mediaproxy.config import load
from mediaproxy.integrations.cache.settings import CacheSettings

from .support import assert_refused, write

ROUTE = """
[[routes]]
prefix = "/o"
integration = "http_proxy"
upstream = "http://127.0.0.1:9000/"
"""


def test_off_unless_cache_dir_is_set(tmp_path: Path) -> None:
    assert load(write(tmp_path, ROUTE)).routes[0].settings.cache is None


def test_defaults_and_a_relative_folder_created(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ROUTE + 'cache_dir = "cache/media"\n')).routes[0].settings
    assert settings.cache == CacheSettings(directory=tmp_path / "cache" / "media")
    assert (tmp_path / "cache" / "media").is_dir()
    assert settings.cache.slice_bytes == 1024 * 1024 and settings.cache.x_cache


def test_every_key(tmp_path: Path) -> None:
    text = ROUTE + (
        'cache_dir = "c"\ncache_max_bytes = 8388608\ncache_slice_bytes = 65536\n'
        "cache_min_uses = 2\ncache_default_ttl = 0\ncache_private = true\nx_cache = false\n"
    )
    assert load(write(tmp_path, text)).routes[0].settings.cache == CacheSettings(
        directory=tmp_path / "c",
        max_bytes=8388608,
        slice_bytes=65536,
        min_uses=2,
        default_ttl_s=0.0,
        private=True,
        x_cache=False,
    )


@pytest.mark.parametrize(
    "extra, key, reason",
    [
        ("cache_max_bytes = 100\n", "cache_max_bytes", "needs cache_dir"),
        ("x_cache = false\n", "x_cache", "needs cache_dir"),
        ('cache_dir = "c"\ncache_max_bytes = -1\n', "cache_max_bytes", "must be >= 1"),
        ('cache_dir = "c"\ncache_max_bytes = 1000\n', "cache_max_bytes", "at least two slices"),
        ('cache_dir = "c"\ncache_slice_bytes = 1000\n', "cache_slice_bytes", "between 65536"),
        ('cache_dir = "c"\ncache_min_uses = 0\n', "cache_min_uses", "must be >= 1"),
        ('cache_dir = "c"\ncache_default_ttl = -1\n', "cache_default_ttl", "seconds >= 0"),
        ('cache_dir = "c"\ncache_default_ttl = "1h"\n', "cache_default_ttl", "seconds >= 0"),
        ('cache_dir = "c"\ncache_private = 1\n', "cache_private", "true or false"),
        ('cache_dir = "c"\ntransfer_mode = "buffered"\n', "cache_dir", "never cached"),
        ('cache_dir = "file/sub"\n', "cache_dir", "cannot create"),
        ("cache_dir = 3\n", "cache_dir", "must be a string"),
    ],
)
def test_bad_values(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    assert_refused(write(tmp_path, ROUTE + extra), f"routes[0].{key}", reason)


def test_bad_value_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, ROUTE + 'cache_dir = "c"\ncache_min_uses = 0\n')
    done = subprocess.run(
        [sys.executable, "-m", "mediaproxy", "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done
    assert "routes[0].cache_min_uses" in done.stderr
