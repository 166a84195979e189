"""The status page at ``/_mediaproxy/``: routes, live streams, and a player per sample file.

Three files of plain HTML, CSS and JavaScript from the package (no build step), one JSON
overview, and one server-sent-events stream that samples the running exchanges once a second.
Sampling reads the ``bytes_sent`` counters the exchanges keep anyway, so watching costs the
streams nothing per chunk. With several worker processes the live table shows every worker's
streams (``SiblingStreams``), each with the pid of the worker running it; with Redis shared by
the fleet, every instance's (``server.fleet_view``), each with its host.

What it shows depends on who may look (``AdminAccess``): with no admin key configured the page
is public, so routes that take API keys or signed URLs, their files and their streams are left
out; with admin keys only their holders see it, and they see everything.

The overview's sample files come from a scan of the file routes' roots, which may hold
anything: only regular files (``lstat``, no symlink followed) are opened, without blocking
(a FIFO swapped in meanwhile is refused, not waited on), on a pool of its own (asyncio's
resolver uses the default one), and the result is kept for ``OVERVIEW_TTL_S`` so that reloads
and many viewers cost one scan.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

from tornado.httputil import HTTPServerRequest
from tornado.iostream import StreamClosedError
from tornado.web import RequestHandler

from mediaproxy import __version__
from mediaproxy.access_control import AdminAccess
from mediaproxy.config import Config, Route
from mediaproxy.errors import ServiceUnavailable, Unauthorized
from mediaproxy.integrations.base import CacheReport
from mediaproxy.integrations.cache.serve import stored_bytes
from mediaproxy.integrations.cache.settings import CacheSettings
from mediaproxy.integrations.file import FileSettings
from mediaproxy.ops.access_log import bounded_header
from mediaproxy.streaming import sniff
from mediaproxy.streaming.threads import LazyPool
from mediaproxy.tornado_internals import reason_phrase

PREFIX = "/_mediaproxy"
PAGE_DIR = Path(__file__).parent / "status_page"
PAGE_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "status.js": ("status.js", "text/javascript; charset=utf-8"),
    "status.css": ("status.css", "text/css; charset=utf-8"),
}
SAMPLE_INTERVAL_S = 1.0
HOST = socket.gethostname()


def cache_fill(route: Route) -> dict[str, int] | None:
    """A cached route's bytes on disk (as this process indexed them) and its bound."""
    settings = getattr(route.settings, "cache", None)
    if not isinstance(settings, CacheSettings):
        return None
    return {"size_bytes": stored_bytes(settings), "max_bytes": settings.max_bytes}


class SendCounter(Protocol):
    @property
    def bytes_sent(self) -> int: ...

    @property
    def content_range(self) -> str | None: ...

    @property
    def cache(self) -> CacheReport | None: ...


class LiveStream(Protocol):
    """What the page reads of a running stream; the server's request handler is one."""

    @property
    def route(self) -> Route: ...

    @property
    def request(self) -> HTTPServerRequest: ...

    @property
    def started_at(self) -> float: ...  # on time.perf_counter

    @property
    def bytes_received(self) -> int: ...

    @property
    def exchange(self) -> SendCounter: ...

    def get_status(self) -> int: ...


# Enough players for a page; a route over a big archive must not make the page scan it all.
MAX_SAMPLES = 24
MAX_FILES_EXAMINED = 2000
PLAYABLE = ("video/", "audio/")
# A page reloaded, or open in several browsers, rescans at most this often; a file added
# meanwhile shows up at the next scan.
OVERVIEW_TTL_S = 30.0
# One scan at a time is all the overview needs; its reads stay off the default pool.
_scan_pool = LazyPool(1, "mediaproxy-overview")
# O_NONBLOCK and O_NOFOLLOW: a name that lstat found to be a regular file may meanwhile have
# become a FIFO (the open must not wait for a writer) or a symlink (not followed).
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


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
    """Regular files below ``root``, sorted, skipping what the file route would refuse.

    ``os.walk`` does not descend into symlinked folders; symlinked files, FIFOs, sockets and
    devices are skipped by ``lstat``.
    """
    for folder, subfolders, names in os.walk(root):
        if not serve_dotfiles:
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            names = [name for name in names if not name.startswith(".")]
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder, name)
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield path
            except OSError:
                continue


def _read_head(path: Path) -> bytes | None:
    """The first bytes of a regular file, or None if it is no longer one (or unreadable)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.pread(fd, sniff.SNIFF_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


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
            head = _read_head(path)
            if head is None:
                continue
            media_type = sniff.content_type(head, path.name)
            if media_type.startswith(PLAYABLE):
                relative = path.relative_to(settings.root)
                samples.append(
                    Sample(
                        _route_url(route.prefix, relative), str(relative), route.prefix, media_type
                    )
                )
    return samples


class SampleCache:
    """``find_samples`` for some routes, scanned on the overview's pool at most once per TTL;
    requests that arrive during a scan share it."""

    def __init__(self, routes: tuple[Route, ...], ttl_s: float = OVERVIEW_TTL_S) -> None:
        self._routes, self._ttl_s = routes, ttl_s
        self._scan: asyncio.Future[list[Sample]] | None = None
        self._expires_at = 0.0

    async def samples(self) -> list[Sample]:
        loop = asyncio.get_running_loop()
        if self._scan is None or (self._scan.done() and loop.time() >= self._expires_at):
            self._expires_at = loop.time() + self._ttl_s
            self._scan = asyncio.wrap_future(_scan_pool.get().submit(find_samples, self._routes))
        # shield: a client leaving mid-scan must not cancel the scan the others wait for.
        return await asyncio.shield(self._scan)


def shown_routes(routes: Iterable[Route], admin: AdminAccess) -> tuple[Route, ...]:
    """The routes a surface may show: all behind an admin key, else the public ones only."""
    return tuple(route for route in routes if admin.protected or not route.access.restricted)


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
    range: str | None  # the request's Range header
    content_range: str | None  # what the body carries (the access log's content_range)
    cache: str | None  # a cached route's X-Cache result (HIT, MISS, ...); None: no cache


def sample_streams(
    active: Iterable[LiveStream], previous: dict[int, StreamSample], now: float, admin: AdminAccess
) -> dict[int, StreamSample]:
    """The running exchanges now (``now`` on ``time.perf_counter``, the handlers' clock) that
    the viewer may see (no private route's without an admin key); rates from ``previous``
    (the last sample), else from start."""
    current: dict[int, StreamSample] = {}
    for handler in active:
        if handler.route.access.restricted and not admin.protected:
            continue
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
            id=key,
            route=handler.route.prefix,
            integration=handler.route.integration,
            method=handler.request.method or "",
            path=handler.request.path,
            client=handler.request.remote_ip or "",
            status=handler.get_status(),
            bytes_sent=exchange.bytes_sent,
            bytes_received=handler.bytes_received,
            sent_per_s=(exchange.bytes_sent - sent_before) / elapsed_s,
            received_per_s=(handler.bytes_received - received_before) / elapsed_s,
            age_s=age_s,
            range=bounded_header(handler.request.headers.get("Range")),
            content_range=exchange.content_range,
            cache=None if exchange.cache is None else exchange.cache.result,
        )
    return current


class AdminOnly(RequestHandler):
    """A surface for the gateway's operators: with admin keys configured, for their holders."""

    admin: AdminAccess

    def prepare(self) -> None:
        try:
            self.admin.check(self.request.headers.get("Authorization"))
        except Unauthorized as error:
            self.set_status(error.status)
            for name, value in error.headers.items():
                self.set_header(name, value)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"{error.status} {error.phrase}\n")


class _StatusHandler(AdminOnly):
    def initialize(self, config: Config, admin: AdminAccess) -> None:
        self.config = config
        self.admin = admin

    def set_default_headers(self) -> None:
        self.set_header("Server", "mediaproxy")
        self.set_header("Cache-Control", "no-store")
        # Paths on the page come from clients: only our own script may run.
        self.set_header(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'"
        )
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {reason_phrase(self)}\n")

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
    def initialize(  # type: ignore[override]
        self,
        config: Config,
        admin: AdminAccess,
        samples: SampleCache,
    ) -> None:
        super().initialize(config, admin)
        self.samples = samples

    async def get(self) -> None:
        routes = shown_routes(self.config.routes, self.admin)
        samples = await self.samples.samples()
        overview = {
            "version": __version__,
            **self.process(),
            "routes": [
                {
                    "prefix": route.prefix,
                    "integration": route.integration,
                    "idle_timeout_s": route.limits.idle_timeout_s,
                    "max_stream_duration_s": route.limits.max_stream_duration_s,
                    "cache": cache_fill(route),
                }
                for route in routes
            ],
            "samples": [{**asdict(sample), "kind": sample.kind} for sample in samples],
        }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(overview))


STREAMS_FILE = "streams-{pid}.json"
# A worker's post older than this is one with no streams left (it posts none then), or gone.
STALE_AFTER_S = 3 * SAMPLE_INTERVAL_S


def stream_rows(streams: Iterable[StreamSample]) -> list[dict[str, Any]]:
    """Streams as the page's rows, each saying where it runs."""
    pid = os.getpid()
    return [{**asdict(sample), "pid": pid, "host": HOST} for sample in streams]


class OtherStreams(NamedTuple):
    rows: list[dict[str, Any]]
    fleet: bool  # every instance's (through Redis), or this instance's other workers' only


class StreamBoard(Protocol):
    """Where a worker posts its streams for the pages other workers serve, and reads theirs."""

    async def post(self, rows: list[dict[str, Any]]) -> None: ...

    async def others(self) -> OtherStreams: ...

    async def close(self) -> None: ...


async def publish(board: StreamBoard, active: Collection[LiveStream], admin: AdminAccess) -> None:
    """Post this worker's streams once per sample interval while it has any; the last post of
    a busy spell says "none left"."""
    streams: dict[int, StreamSample] = {}
    try:
        while True:
            had_streams = bool(streams)
            streams = sample_streams(active, streams, time.perf_counter(), admin)
            if streams or had_streams:
                await board.post(stream_rows(streams.values()))
            await asyncio.sleep(SAMPLE_INTERVAL_S)
    finally:
        await board.close()


class SiblingStreams:
    """The live streams of every worker process of this instance, through small files in the
    folder the workers already share for their metrics: each worker writes its own, and the
    page's events add the other workers' files to this one's streams. The parent removes a
    worker's file when it reaps it (``forget_worker``)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self._path = self.folder / STREAMS_FILE.format(pid=os.getpid())

    async def post(self, rows: list[dict[str, Any]]) -> None:
        temporary = self._path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(rows))
            temporary.replace(self._path)  # a reader sees the old file or the new
        except OSError:
            pass  # the folder is gone (the parent is stopping): nobody is left to read it

    async def others(self) -> OtherStreams:
        rows: list[dict[str, Any]] = []
        now_s = time.time()
        for path in self.folder.glob(STREAMS_FILE.format(pid="*")):
            if path == self._path:
                continue
            try:
                if now_s - path.stat().st_mtime > STALE_AFTER_S:
                    continue
                rows += json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # its worker is just gone, or mid-replace
        return OtherStreams(rows, False)

    async def close(self) -> None:
        pass  # the parent removes the file once this worker is gone


def forget_worker(folder: str, pid: int) -> None:
    """A worker exited: its streams are no longer shown."""
    (Path(folder) / STREAMS_FILE.format(pid=pid)).unlink(missing_ok=True)


class HeldSlot(Protocol):
    def release(self) -> None: ...


class StreamCap(Protocol):
    """Where streams are counted against max_concurrent_streams (the admission's slots)."""

    def acquire(self, prefix: str, route_cap: int) -> HeldSlot:
        """A slot, or ServiceUnavailable when the cap is reached."""


class EventsHandler(_StatusHandler):
    """Server-sent events: every second, the running exchanges of this process, and with
    several workers every other worker's too (``SiblingStreams``), or with Redis every
    instance's (``server.fleet_view``).

    Each stream lasts as long as its page is open, so it takes a stream slot like any other
    (a 503 when the gateway runs max_concurrent_streams already): otherwise anyone could hold
    open any number of them.
    """

    def initialize(  # type: ignore[override]
        self,
        config: Config,
        admin: AdminAccess,
        active: Collection[LiveStream],
        siblings: StreamBoard | None,
        streams: StreamCap,
    ) -> None:
        super().initialize(config, admin)
        self.active = active
        self.siblings = siblings
        self.streams = streams

    async def get(self) -> None:
        try:
            slot = self.streams.acquire(PREFIX + "/events", 0)
        except ServiceUnavailable as error:
            self.set_status(error.status)
            for name, value in error.headers.items():
                self.set_header(name, value)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"{error.status} {error.phrase}\n")
            return
        try:
            await self._send_events()
        finally:
            slot.release()

    async def _send_events(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")  # a proxy in front must not hold events
        streams: dict[int, StreamSample] = {}
        self.write(f"retry: {int(SAMPLE_INTERVAL_S * 2000)}\n\n")
        while True:
            streams = sample_streams(self.active, streams, time.perf_counter(), self.admin)
            rows = stream_rows(streams.values())
            fleet = False
            if self.siblings is not None:
                others = await self.siblings.others()
                rows += others.rows
                fleet = others.fleet
            event = {**self.process(), "host": HOST, "fleet": fleet, "streams": rows}
            self.write(f"data: {json.dumps(event)}\n\n")
            try:
                await self.flush()
            except StreamClosedError:
                return
            await asyncio.sleep(SAMPLE_INTERVAL_S)


def rules(
    config: Config,
    active: Collection[LiveStream],
    admin: AdminAccess,
    streams: StreamCap,
    siblings: StreamBoard | None = None,
) -> list[Any]:
    """The status page's URL rules, for the application."""
    settings = {"config": config, "admin": admin}
    samples = SampleCache(shown_routes(config.routes, admin))
    return [
        (PREFIX, _RedirectToPage, settings),
        (PREFIX + "/api/overview", OverviewHandler, {**settings, "samples": samples}),
        (
            PREFIX + "/events",
            EventsHandler,
            {**settings, "active": active, "siblings": siblings, "streams": streams},
        ),
        (PREFIX + "/(" + "|".join(map(re.escape, PAGE_FILES)) + ")", PageHandler, settings),
    ]


class _RedirectToPage(_StatusHandler):
    def get(self) -> None:
        self.redirect(PREFIX + "/", permanent=True)

    head = get
