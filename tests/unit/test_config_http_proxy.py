"""The http_proxy route keys: defaults, and a clear error for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaproxy.config import ConfigError, load
from mediaproxy.http.upstreams import Upstream
from mediaproxy.integrations.http_proxy.settings import HttpProxySettings

ROUTE = """
[[routes]]
prefix = "/api"
integration = "http_proxy"
upstream = "http://127.0.0.1:9000/base/"
"""


def load_route(tmp_path: Path, extra: str = "") -> HttpProxySettings:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(ROUTE + extra)
    settings: HttpProxySettings = load(path).routes[0].settings
    return settings


def test_defaults(tmp_path: Path) -> None:
    assert load_route(tmp_path) == HttpProxySettings(
        upstream=Upstream("http", "127.0.0.1", 9000, "/base/")
    )


def test_every_key(tmp_path: Path) -> None:
    settings = load_route(
        tmp_path, 'transfer_mode = "buffered"\nmax_idle_connections = 0\nconnect_timeout = 2.5\n'
    )
    assert (settings.transfer_mode, settings.max_idle_connections, settings.connect_timeout_s) == (
        "buffered",
        0,
        2.5,
    )


@pytest.mark.parametrize(
    "extra, key, reason",
    [
        ('transfer_mode = "fast"\n', "routes[0].transfer_mode", "must be one of stream, buffered"),
        ("max_idle_connections = -1\n", "routes[0].max_idle_connections", "between 0 and 4096"),
        ("connect_timeout = 0\n", "routes[0].connect_timeout", "positive number of seconds"),
        ('root = "."\n', "routes[0].root", "unknown key"),
    ],
)
def test_bad_values(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_route(tmp_path, extra)
    assert caught.value.key == key and reason in caught.value.reason


@pytest.mark.parametrize(
    "upstream, reason",
    [
        ("https://origin/", "must be an http:// URL"),
        ("http://origin/?q", "query or fragment"),
    ],
)
def test_bad_upstream(tmp_path: Path, upstream: str, reason: str) -> None:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(ROUTE.replace("http://127.0.0.1:9000/base/", upstream))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == "routes[0].upstream" and reason in caught.value.reason


def test_upstream_is_required(tmp_path: Path) -> None:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(ROUTE.replace('upstream = "http://127.0.0.1:9000/base/"\n', ""))
    with pytest.raises(ConfigError, match="routes\\[0\\].upstream: is required"):
        load(path)


def test_raw_path(tmp_path: Path) -> None:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(ROUTE)
    assert load(path).routes[0].raw_path is False
    path.write_text(ROUTE + "raw_path = true\n")
    assert load(path).routes[0].raw_path is True


def test_raw_path_only_where_the_path_is_passed_on(tmp_path: Path) -> None:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(
        f'[[routes]]\nprefix = "/m"\nintegration = "file"\nroot = "{tmp_path}"\nraw_path = true\n'
    )
    with pytest.raises(ConfigError, match=r"routes\[0\]\.raw_path: only http_proxy and function"):
        load(path)
