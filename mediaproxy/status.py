"""The status page at ``/_mediaproxy/``: routes, live streams, and a player per sample file.

Three files of plain HTML, CSS and JavaScript from the package (no build step), one JSON
overview, and one server-sent-events stream that samples the running exchanges once a second.
Sampling reads the ``bytes_sent`` counters the exchanges keep anyway, so watching costs the
streams nothing per chunk. A page shows the process that served it: with several worker
processes each has its own streams (``/metrics`` is the one that sums them all).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tornado.iostream import StreamClosedError
from tornado.web import RequestHandler

from mediaproxy import __version__, sniff
from mediaproxy.config import Config, FileSettings, Route
from mediaproxy.handler import GatewayHandler

PREFIX = "/_mediaproxy"
PAGE_DIR = Path(__file__).parent / "status_page"
PAGE_FILES = {"": ("index.html", "text/html; charset=utf-8"),
              "status.js": ("status.js", "text/javascript; charset=utf-8"),
              "status.css": ("status.css", "text/css; charset=utf-8")}
SAMPLE_INTERVAL_S = 1.0
# Enough players for a page; a route over a big archive must not make the page scan it all.
MAX_SAMPLES = 24
MAX_FILES_EXAMINED = 2000
PLAYABLE = ("video/", "audio/")


@dataclass(frozen=True)
class Sample:
    url: str
    name: str
    route: str
    media_type: str

    @property
    def kind(self) -> str:
        return self.media_type.split("/", 1)[0]


def _files_below(root: Path, serve_dotfiles: bool) -> Iterator[Path]:
    """Regular files below ``root``, sorted, skipping what the file route would refuse."""
    for folder, subfolders, names in os.walk(root):
        if not serve_dotfiles:
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            names = [name for name in names if not name.startswith(".")]
        subfolders.sort()
        for name in sorted(names):
            yield Path(folder, name)


def _route_url(prefix: str, relative: Path) -> str:
    base = "" if prefix == "/" else prefix
    return base + "/" + "/".join(quote(part) for part in relative.parts)


def find_samples(routes: Iterable[Route]) -> list[Sample]:
    """Video and audio files under the file routes, typed by their bytes (blocking I/O)."""
    samples: list[Sample] = []
    examined = 0
    for route in routes:
        if route.integration != "file":
            continue
        settings: FileSettings = route.settings
        for path in _files_below(settings.root, settings.serve_dotfiles):
            examined += 1
            if examined > MAX_FILES_EXAMINED or len(samples) >= MAX_SAMPLES:
                return samples
            try:
                with path.open("rb") as stream:
                    head = stream.read(sniff.SNIFF_BYTES)
            except OSError:
                continue
            media_type = sniff.content_type(head, path.name)
            if media_type.startswith(PLAYABLE):
                relative = path.relative_to(settings.root)
                samples.append(Sample(_route_url(route.prefix, relative), str(relative),
                                      route.prefix, media_type))
    return samples


@dataclass
class StreamSample:
    """One running exchange at one instant, with its rates since the previous instant."""

    id: int
    route: str
    integration: str
    method: str
    path: str
    client: str
    status: int
    bytes_sent: int
    bytes_received: int
    sent_per_s: float
    received_per_s: float
    age_s: float


def sample_streams(active: Iterable[GatewayHandler], previous: dict[int, StreamSample],
                   now: float) -> dict[int, StreamSample]:
    """The running exchanges now; rates from ``previous`` (the last sample), else from start."""
    current: dict[int, StreamSample] = {}
    for handler in active:
        exchange = handler.exchange
        key = id(handler)
        age_s = now - handler.started_at
        before = previous.get(key)
        if before is not None:
            elapsed_s = max(age_s - before.age_s, 1e-9)
            sent_before, received_before = before.bytes_sent, before.bytes_received
        else:
            elapsed_s, sent_before, received_before = max(age_s, 1e-9), 0, 0
        current[key] = StreamSample(
            id=key, route=handler.route.prefix, integration=handler.route.integration,
            method=handler.request.method or "", path=handler.request.path,
            client=handler.request.remote_ip or "", status=handler.get_status(),
            bytes_sent=exchange.bytes_sent, bytes_received=handler.bytes_received,
            sent_per_s=(exchange.bytes_sent - sent_before) / elapsed_s,
            received_per_s=(handler.bytes_received - received_before) / elapsed_s,
            age_s=age_s)
    return current


class _StatusHandler(RequestHandler):
    def initialize(self, config: Config) -> None:
        self.config = config

    def set_default_headers(self) -> None:
        self.set_header("Server", "mediaproxy")
        self.set_header("Cache-Control", "no-store")
        # Paths on the page come from clients: only our own script may run.
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; img-src 'self' data:; object-src 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    def process(self) -> dict[str, Any]:
        processes = self.config.server.processes
        return {"pid": os.getpid(), "processes": processes}


class PageHandler(_StatusHandler):
    def get(self, name: str) -> None:
        file_name, content_type = PAGE_FILES[name]
        self.set_header("Content-Type", content_type)
        self.finish((PAGE_DIR / file_name).read_bytes())

    head = get


class OverviewHandler(_StatusHandler):
    async def get(self) -> None:
        routes = self.config.routes
        loop = asyncio.get_running_loop()
        samples = await loop.run_in_executor(None, find_samples, routes)
        overview = {
            "version": __version__,
            **self.process(),
            "routes": [{"prefix": route.prefix, "integration": route.integration,
                        "idle_timeout_s": route.limits.idle_timeout_s,
                        "max_stream_duration_s": route.limits.max_stream_duration_s}
                       for route in routes],
            "samples": [{**asdict(sample), "kind": sample.kind} for sample in samples],
        }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(overview))


class EventsHandler(_StatusHandler):
    """Server-sent events: every second, the running exchanges of this process."""

    def initialize(self, config: Config, active: set[GatewayHandler]) -> None:  # type: ignore[override]
        super().initialize(config)
        self.active = active

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")  # a proxy in front must not hold events
        loop = asyncio.get_running_loop()
        streams: dict[int, StreamSample] = {}
        self.write(f"retry: {int(SAMPLE_INTERVAL_S * 2000)}\n\n")
        while True:
            streams = sample_streams(self.active, streams, loop.time())
            event = {**self.process(), "streams": [asdict(s) for s in streams.values()]}
            self.write(f"data: {json.dumps(event)}\n\n")
            try:
                await self.flush()
            except StreamClosedError:
                return
            await asyncio.sleep(SAMPLE_INTERVAL_S)


def rules(config: Config, active: set[GatewayHandler]) -> list[Any]:
    """The status page's URL rules, for the application."""
    settings = {"config": config}
    return [
        (PREFIX, _RedirectToPage, settings),
        (PREFIX + "/api/overview", OverviewHandler, settings),
        (PREFIX + "/events", EventsHandler, {**settings, "active": active}),
        (PREFIX + "/(" + "|".join(map(re.escape, PAGE_FILES)) + ")", PageHandler, settings),
    ]


class _RedirectToPage(_StatusHandler):
    def get(self) -> None:
        self.redirect(PREFIX + "/", permanent=True)

    head = get
