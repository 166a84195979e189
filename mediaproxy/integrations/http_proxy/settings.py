"""The keys of an ``integration = "http_proxy"`` route, checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from mediaproxy.config import Table
from mediaproxy.http.upstreams import Upstream
from mediaproxy.integrations.cache.settings import CacheSettings, read_cache_settings

TRANSFER_MODES = ("stream", "buffered")


@dataclass(frozen=True)
class HttpProxySettings:
    upstream: Upstream
    # "buffered" is the legacy gateway behaviour (whole response, then Content-Length), kept
    # to show the difference in time to first byte; see Limits for its ceilings.
    transfer_mode: str = "stream"
    # nginx's upstream `keepalive` example uses 32 idle connections per upstream.
    max_idle_connections: int = 32
    # nginx proxy_connect_timeout is 60 s; a loopback or LAN origin answers in milliseconds.
    connect_timeout_s: float = 10.0
    cache: CacheSettings | None = None  # opt-in: cache_dir and the other cache_* keys


def read_settings(table: Table) -> HttpProxySettings:
    try:
        upstream = Upstream.parse(table.string("upstream"))
    except ValueError as error:
        raise table.error("upstream", str(error)) from error
    transfer_mode = table.choice("transfer_mode", TRANSFER_MODES, HttpProxySettings.transfer_mode)
    cache = read_cache_settings(table)
    if cache is not None and transfer_mode == "buffered":
        raise table.error("cache_dir", 'a transfer_mode = "buffered" route is never cached')
    return HttpProxySettings(
        upstream=upstream,
        transfer_mode=transfer_mode,
        max_idle_connections=table.integer(
            "max_idle_connections", HttpProxySettings.max_idle_connections, maximum=4096
        ),
        connect_timeout_s=table.seconds("connect_timeout", HttpProxySettings.connect_timeout_s),
        cache=cache,
    )
