"""Responses from cached slices, and the origin fetches that fill them, shared by every client.

How a GET on a cached route is answered:

1. ``request_bypass`` and the route's own rules (a route with API keys or signed URLs is
   private unless ``cache_private = true``) may send it straight to the origin: BYPASS. A
   HEAD is answered from a stored version's head while it is fresh (HIT), and otherwise
   proxied (BYPASS): it never starts a probe or a fill.
2. With no stored version, or a stale one, the request starts a *probe* or joins the one
   running for the same object: a ranged GET for the slices the client wants (conditional on
   the stored ETag when there is one). Its head decides: a 304 refreshes the stored version
   (REVALIDATED); a cacheable 206 (or a 200 from an origin that ignores Range: the whole
   object, sliced as it streams) becomes the version's slices (MISS), a new ETag dropping
   every slice of the old one; anything else (an error, no-store, private, Vary, no strong
   ETag) is answered by the origin itself, and an uncacheable object is remembered as such
   for ``cache_default_ttl``. An object with no ETag but a Last-Modified is stored only from
   a response that holds all of it (a 200, or a 206 of "bytes=0-"), revalidated with
   If-Modified-Since, and read whole again when a slice of it is missing: a Last-Modified
   date cannot tell whether parts of two responses belong together.
3. The client's Range (none, one, or several: multipart/byteranges) is answered slice by
   slice: a stored slice goes out of its file with ``Exchange.send_file`` (sendfile where the
   connection allows it); a slice some fill is writing is read from that fill's file as its
   bytes land, by every client that wants it (read-while-write: one origin fetch, however
   many clients); a missing one starts a fill with a ranged GET up to the end of the client's
   range or the next slice already stored or being filled.

A fill belongs to no client. It runs while somebody reads from it. When the last client
reading it leaves (done, aborted, timed out), it finishes the slice it is writing (those
bytes are on their way already, and a client that read a slice's first bytes is likely to
want the rest) and stops there, or after ``ORPHAN_GRACE_S`` if the origin is that slow: its
origin connection is closed and its half-written slices deleted. A client that comes for
the same slices meanwhile takes it over. So an aborted client never leaves a fetch or a
descriptor behind for longer than one slice, and a fill nobody wants costs nothing more.

A fill whose origin answers with another ETag than the version a client is reading drops the
old version and fails that client's response (its connection is cut, as after any failure
once the headers are out): no response ever mixes two versions.

Disk full (no room, a quota, or the largest file the process may write): the fill stops and
deletes its half-written slices, the failure is logged once, and the cache answers nothing but
BYPASS for ``DISK_FULL_PAUSE_S`` before it tries again. Nobody sharing that fill gets an
error: a client still waiting for its head is answered by the origin itself (BYPASS), and a
client whose response has started gets the rest of its range from the origin with a ranged
GET of the same version (If-Match, its ETag checked), stored nowhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mediaproxy.errors import PreconditionFailed, RangeNotSatisfiable, UpstreamError
from mediaproxy.http.caching import (
    Bypass,
    freshness_lifetime_s,
    request_bypass,
    response_bypass,
    strong_etag,
)
from mediaproxy.http.conditional import (
    Outcome,
    Validators,
    evaluate,
    if_range_allows_partial,
    parse_http_date,
)
from mediaproxy.http.headers import end_to_end
from mediaproxy.http.ranges import (
    ByteRange,
    NotSatisfiable,
    PartialContent,
    parse_content_range,
    parse_range,
    plan_multipart,
)
from mediaproxy.integrations.base import CacheReport, Exchange
from mediaproxy.integrations.cache.settings import CacheSettings
from mediaproxy.integrations.cache.store import (
    LAST_MODIFIED_TAG,
    DiskFull,
    ObjectMeta,
    SliceStore,
    SliceWriter,
)
from mediaproxy.integrations.http_proxy.relay import ResponseHead
from mediaproxy.streaming.zerocopy import ZERO_COPY_MIN_BYTES, ZeroCopySource

log = logging.getLogger("mediaproxy")

# After a full disk, how long the cache stands aside before it writes again.
DISK_FULL_PAUSE_S = 10.0
# How many objects' request counts are kept for cache_min_uses (the least recent forgotten).
USE_COUNTS = 65536
# How long a fill nobody reads any more may take to finish its slice before it is cancelled:
# the gateway's own patience with a client, not an origin's.
ORPHAN_GRACE_S = 5.0
# What a fill reads from the origin at once: the relay's largest chunk.
FILL_CHUNK_BYTES = 1024 * 1024
# Fields the cache writes itself, or that describe one message rather than the representation.
_NOT_STORED = frozenset(
    {"content-length", "content-range", "accept-ranges", "date", "age", "x-cache", "via"}
)
# A Range header's ranges are placed before the size is known against this, so "bytes=-N"
# (from the end) shows up as an offset no object has.
_UNKNOWN_SIZE = 2**62

HIT, MISS, REVALIDATED, BYPASS = "HIT", "MISS", "REVALIDATED", "BYPASS"


class BodySource(Protocol):
    def body(self) -> AsyncIterator[bytes]: ...


class Fetched(Protocol):
    """An origin response being read (the proxy's ``RoundTrip``)."""

    @property
    def relay(self) -> BodySource: ...

    def set_chunk_size(self, size_bytes: int) -> None: ...


class OriginUser(Protocol):
    """Who hears of an origin response's progress (a fill, which passes it on to its
    readers' timers, or one client) and of its status."""

    upstream_status: int | None

    def progress(self) -> None: ...


class Origin(Protocol):
    """How the cache asks the route's origin for bytes: one GET of ``target`` (the route's
    request-target for the object) with the given extra fields (Range, If-None-Match),
    yielding once the head is in."""

    def fetch(
        self, user: OriginUser, target: str, fields: list[tuple[str, str]]
    ) -> contextlib.AbstractAsyncContextManager[tuple[Fetched, ResponseHead]]: ...


@dataclass(frozen=True)
class _Revalidated:
    """The origin answered 304: the stored version, fresh again."""

    meta: ObjectMeta


class _Enough(Exception):
    """Every slice the fill took on is written: the rest of the origin's body is not needed."""


_DISK_FULL = Bypass("the cache's disk is full")


@dataclass
class _ClientProgress:
    """One client as the user of an origin response of its own: its timers hear of the
    progress; the status is not its response's."""

    exchange: Exchange
    upstream_status: int | None = None

    def progress(self) -> None:
        self.exchange.progress()


@dataclass(eq=False)
class Fill:
    """One origin response written into consecutive slices, readable by any number of clients
    while it arrives."""

    cache: RangeCache
    key: str
    target: str  # what the origin is asked for (the route's request-target for the object)
    first: int  # the slice the request starts at
    stop: int | None  # the slice after the last one asked for; None: to the end
    meta: ObjectMeta | None  # the version asked about, then the version being written
    revalidate: bool = False  # a probe of a stored version: conditional on its ETag
    users: set[Exchange] = field(default_factory=set)
    # The head's verdict: the version now stored and how the head was (MISS or REVALIDATED),
    # or a Bypass; set once.
    head: asyncio.Future[tuple[ObjectMeta, str] | Bypass] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # The slices this fill has taken on and not yet committed, and the writer of each one
    # begun: a slice is begun when the body reaches it, so a long object holds one open file.
    claims: set[int] = field(default_factory=set)
    writers: dict[int, SliceWriter] = field(default_factory=dict)
    done: bool = False
    error: BaseException | None = None
    upstream_status: int | None = None
    task: asyncio.Task[None] | None = None
    orphan_timer: asyncio.TimerHandle | None = None  # armed while nobody reads it
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def progress(self) -> None:
        for user in self.users:
            user.progress()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def written(self, index: int) -> int | None:
        """Bytes of slice ``index`` written so far; None if this fill does not hold it."""
        if index not in self.claims:
            return None
        writer = self.writers.get(index)
        return 0 if writer is None else writer.written

    def begun(self, index: int) -> bool:
        """Whether slice ``index`` has a writer, or never will from this fill."""
        return index in self.writers or index not in self.claims or self.done


class RangeCache:
    """One route's cache: its slices on disk, the fills running, what it counted."""

    def __init__(self, settings: CacheSettings, prefix: str, origin: Origin) -> None:
        self.settings = settings
        self.prefix = prefix
        self.origin = origin
        self.store = _store(settings)
        self.origin_bytes = 0  # read by this route's fills since start-up
        self._filling: dict[tuple[str, str, int], Fill] = {}  # (key, etag, slice) -> fill
        self._probes: dict[str, Fill] = {}  # key -> the probe whose head is awaited
        self._uncacheable: dict[str, float] = {}  # key -> until (loop time)
        self._uses: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._disk_full_until = 0.0

    def close(self) -> None:
        """Cancel every fill (the route is going away)."""
        fills = {*self._filling.values(), *self._probes.values()}
        for fill in fills:
            self._forget(fill)
            if fill.task is not None:
                fill.task.cancel()

    # -- the request ------------------------------------------------------------------------

    async def respond(
        self,
        exchange: Exchange,
        forward: Callable[[Exchange], Awaitable[None]],
        *,
        target: str,
        restricted: bool,
    ) -> None:
        """Answer from the cache (asking the origin for ``target``), or by ``forward`` (the
        route's uncached path) when the request or the object may not be cached."""
        request = exchange.request
        key = self.prefix + request.path + ("?" + request.query if request.query else "")
        bypass = self._bypass(exchange, key, restricted)
        joined: set[Fill] = set()  # the fills this client reads from, left when it is done
        try:
            if bypass is None:
                meta = self.store.meta(key)
                if meta is not None and meta.entity_tag is None and not self._complete(meta):
                    # A version known by Last-Modified only is read whole in one response: a
                    # slice of it evicted cannot come from another one. Read it all again.
                    self.store.drop(key)
                    meta = None
                state = HIT
                if meta is None or not meta.fresh(time.time()):
                    wanted = _wanted(request.headers.get("Range"), meta)
                    verdict = await self._probe(exchange, key, target, meta, wanted, joined)
                    if isinstance(verdict, Bypass):
                        bypass = verdict
                    else:
                        meta, state = verdict
                if bypass is None:
                    assert meta is not None
                    await self._serve(exchange, meta, target, state, joined)
                    return
        finally:
            for fill in joined:
                self.leave(fill, exchange)
            if exchange.cache is not None:
                exchange.cache.size_bytes = self.store.size_bytes
                exchange.cache.evictions = self.store.evictions
                exchange.cache.origin_bytes = self.origin_bytes
        log.debug("cache bypass %s: %s", key, bypass.reason)
        exchange.cache = self._report(BYPASS)
        await forward(
            _WithField(exchange, ("X-Cache", BYPASS)) if self.settings.x_cache else exchange
        )

    def _bypass(self, exchange: Exchange, key: str, restricted: bool) -> Bypass | None:
        request = exchange.request
        private_ok = restricted and self.settings.private
        bypass = request_bypass(
            request.method, request.headers.get_all(), authorization_allowed=private_ok
        )
        if bypass is not None:
            return bypass
        if restricted and not self.settings.private:
            return Bypass("a private route (cache_private = false)")
        if request.method == "HEAD":
            meta = self.store.meta(key)
            if meta is None or not meta.fresh(time.time()):
                return Bypass("HEAD of an object not stored, or stale")
            return None  # the stored head answers it; not a use: it sends no byte
        if self._disk_full_now():
            return _DISK_FULL
        loop_now = asyncio.get_running_loop().time()
        until = self._uncacheable.get(key)
        if until is not None:
            if loop_now < until:
                return Bypass("uncacheable at the origin")
            del self._uncacheable[key]
        uses = self._uses.pop(key, 0) + 1
        self._uses[key] = uses
        if len(self._uses) > USE_COUNTS:
            self._uses.popitem(last=False)
        if uses < self.settings.min_uses:
            return Bypass(f"use {uses} of cache_min_uses {self.settings.min_uses}")
        return None

    def _x_cache(self, state: str) -> list[tuple[str, str]]:
        return [("X-Cache", state)] if self.settings.x_cache else []

    # -- probes: the head that tells what the object is now ---------------------------------

    async def _probe(
        self,
        exchange: Exchange,
        key: str,
        target: str,
        meta: ObjectMeta | None,
        wanted: tuple[int, int | None],
        joined: set[Fill],
    ) -> tuple[ObjectMeta, str] | Bypass:
        """The probe's verdict; the client stays one of its readers (in ``joined``)."""
        probe = self._probes.get(key)
        if probe is None:
            first, stop = self._slices_of(wanted)
            probe = self._start_fill(key, target, first, stop, meta, exchange)
            probe.revalidate = meta is not None
            self._probes[key] = probe
        joined.add(probe)
        self.join(probe, exchange, joined)
        return await asyncio.shield(probe.head)

    def _complete(self, meta: ObjectMeta) -> bool:
        """Every slice of the version stored or being filled."""
        return all(
            self.store.has_slice(meta, index) or (meta.key, meta.etag, index) in self._filling
            for index in range(self.store.slice_count(meta))
        )

    def _slices_of(self, wanted: tuple[int, int | None]) -> tuple[int, int | None]:
        size = self.settings.slice_bytes
        start, end = wanted
        return start // size, None if end is None else -(-end // size)

    # -- fills ------------------------------------------------------------------------------

    def _start_fill(
        self,
        key: str,
        target: str,
        first: int,
        stop: int | None,
        meta: ObjectMeta | None,
        user: Exchange,
    ) -> Fill:
        fill = Fill(self, key, target, first, stop, meta)
        fill.users.add(user)
        fill.task = asyncio.ensure_future(self._run(fill))
        return fill

    def join(self, fill: Fill, user: Exchange, joined: set[Fill]) -> None:
        fill.users.add(user)
        joined.add(fill)
        if fill.orphan_timer is not None:
            fill.orphan_timer.cancel()
            fill.orphan_timer = None

    def leave(self, fill: Fill, user: Exchange) -> None:
        """``user`` reads no more from ``fill``; after the last one, the fill ends with the
        slice it is writing, or is cancelled after ``ORPHAN_GRACE_S``."""
        fill.users.discard(user)
        if not fill.users and not fill.done and fill.orphan_timer is None:
            fill.orphan_timer = asyncio.get_running_loop().call_later(
                ORPHAN_GRACE_S, self._cancel, fill
            )

    def _cancel(self, fill: Fill) -> None:
        if not fill.users and fill.task is not None:
            self._forget(fill)  # nobody finds it from now on, though it ends a little later
            fill.task.cancel()

    def _forget(self, fill: Fill) -> None:
        if self._probes.get(fill.key) is fill:
            del self._probes[fill.key]
        if fill.meta is not None:
            for index in fill.claims:
                if self._filling.get((fill.key, fill.meta.etag, index)) is fill:
                    del self._filling[(fill.key, fill.meta.etag, index)]

    async def _run(self, fill: Fill) -> None:
        try:
            await self._fetch(fill)
        except _Enough:
            pass
        except BaseException as error:
            fill.error = error
            if isinstance(error, DiskFull):
                self._disk_full(error)
                if not fill.head.done():
                    fill.head.set_result(_DISK_FULL)  # its clients ask the origin themselves
            if not fill.head.done():
                fill.head.set_exception(
                    error
                    if isinstance(error, UpstreamError)
                    else UpstreamError(f"cache fill failed: {error!r}")
                )
                fill.head.exception()  # retrieved here: a probe nobody awaits must not warn
            if not isinstance(error, (asyncio.CancelledError, UpstreamError, DiskFull)):
                log.exception("cache fill of %s failed", fill.key)
        finally:
            fill.done = True
            if fill.orphan_timer is not None:
                fill.orphan_timer.cancel()
            self._forget(fill)
            for writer in fill.writers.values():
                if writer.fd >= 0:
                    writer.abort()
            fill.notify()

    def _disk_full(self, error: DiskFull) -> None:
        loop_now = asyncio.get_running_loop().time()
        if self._disk_full_until == 0.0:
            log.error(
                "cache %s: disk full (%s); serving uncached, retrying every %g s",
                self.settings.directory,
                error.strerror,
                DISK_FULL_PAUSE_S,
            )
        self._disk_full_until = loop_now + DISK_FULL_PAUSE_S

    async def _fetch(self, fill: Fill) -> None:
        slice_bytes = self.settings.slice_bytes
        fields = [("Accept-Encoding", "identity")]
        start = fill.first * slice_bytes
        end = "" if fill.stop is None else str(fill.stop * slice_bytes - 1)
        fields.append(("Range", f"bytes={start}-{end}"))
        if fill.revalidate and fill.meta is not None:
            etag = fill.meta.entity_tag
            if etag is not None:
                fields.append(("If-None-Match", etag))
            else:
                fields.append(("If-Modified-Since", fill.meta.etag[len(LAST_MODIFIED_TAG) :]))
        async with self.origin.fetch(fill, fill.target, fields) as (upstream, head):
            verdict = self._judge(fill, head, start)
            if self._probes.get(fill.key) is fill:
                del self._probes[fill.key]  # from now on the store tells what the object is
            if isinstance(verdict, Bypass):
                fill.head.set_result(verdict)
                raise _Enough
            if isinstance(verdict, _Revalidated):
                fill.head.set_result((verdict.meta, REVALIDATED))
                raise _Enough
            meta, body_start = verdict
            self._take_slices(fill, meta, body_start, whole=head.status == 200)
            fill.head.set_result((meta, MISS))
            if not fill.claims:
                raise _Enough
            upstream.set_chunk_size(FILL_CHUNK_BYTES)
            position = body_start
            async for chunk in upstream.relay.body():
                self.origin_bytes += len(chunk)
                fill.progress()
                position = self._write(fill, meta, position, chunk)
                if not fill.claims:
                    raise _Enough
                # The body comes faster than the loop turns: let the readers of what was just
                # written, and every other stream, have a turn (streaming/precedence.py).
                await asyncio.sleep(0)
            if fill.claims:
                raise UpstreamError(f"origin body of {fill.key} ended at byte {position}")

    def _judge(
        self, fill: Fill, head: ResponseHead, start: int
    ) -> tuple[ObjectMeta, int] | _Revalidated | Bypass:
        """What the probe's head means: the version and where its body starts, a refreshed
        version (304), or why the origin must answer the client itself."""
        fields = head.fields
        now = time.time()
        lifetime = freshness_lifetime_s(fields, default_s=self.settings.default_ttl_s)
        if head.status == 304 and fill.revalidate and fill.meta is not None:
            etag = strong_etag(fields)
            if etag is not None and etag != fill.meta.etag:
                return Bypass("304 with another ETag")
            refreshed = fill.meta.confirmed(now, lifetime)
            self.store.put_meta(refreshed)
            return _Revalidated(refreshed)
        if head.status not in (200, 206):
            return Bypass(f"origin status {head.status}")
        placed = (
            parse_content_range(head.headers.get("Content-Range", ""))
            if head.status == 206
            else None
        )
        # In one response, all of it: a 200, or a 206 of every byte (a Range "bytes=0-").
        whole = head.status == 200 or (
            placed is not None and placed[0].start == 0 and placed[0].stop == placed[1]
        )
        bypass = response_bypass(fields, whole=whole)
        if bypass is not None:
            if response_bypass(fields, whole=True) is not None:  # not even a whole GET would do
                self._uncacheable[fill.key] = (
                    asyncio.get_running_loop().time() + self.settings.default_ttl_s
                )
            return bypass
        if head.status == 206:
            if placed is None or placed[0].start != start:
                return Bypass("a 206 that is not the range asked for")
            body_start, size = placed[0].start, placed[1]
        elif head.content_length is None:
            return Bypass("a 200 without Content-Length")
        else:
            body_start, size = 0, head.content_length
        modified = next((value for name, value in fields if name.lower() == "last-modified"), "")
        etag = strong_etag(fields) or LAST_MODIFIED_TAG + modified  # response_bypass checked
        meta = ObjectMeta(
            key=fill.key,
            etag=etag,
            size=size,
            fields=tuple(
                (name, value)
                for name, value in end_to_end(fields)
                if name.lower() not in _NOT_STORED
            ),
            confirmed_s=now,
            lifetime_s=lifetime,
        )
        self.store.put_meta(meta)  # a new ETag drops the old version's slices here
        return meta, body_start

    def _take_slices(self, fill: Fill, meta: ObjectMeta, body_start: int, *, whole: bool) -> None:
        """Take on every slice from the body's start to the fill's stop (to the end for a
        ``whole`` object: an origin that ignores Range is read once, all of it) that is
        neither stored nor being filled by another fill."""
        fill.meta = meta
        count = self.store.slice_count(meta)
        first = body_start // self.settings.slice_bytes
        stop = count if fill.stop is None or whole else fill.stop
        for index in range(first, min(stop, count)):
            if self.store.has_slice(meta, index) or (meta.key, meta.etag, index) in self._filling:
                continue
            fill.claims.add(index)
            self._filling[(meta.key, meta.etag, index)] = fill

    def _write(self, fill: Fill, meta: ObjectMeta, position: int, chunk: bytes) -> int:
        slice_bytes = self.settings.slice_bytes
        view = memoryview(chunk)
        while view:
            index = position // slice_bytes
            room = (index + 1) * slice_bytes - position
            part, view = view[:room], view[room:]
            if index in fill.claims:
                writer = fill.writers.get(index)
                if writer is None:
                    writer = fill.writers[index] = self.store.begin_slice(meta, index)
                writer.write(part)
                if writer.written == writer.length:
                    del fill.writers[index]
                    fill.claims.discard(index)
                    self._filling.pop((meta.key, meta.etag, index), None)
                    writer.commit()
                    if not fill.users:
                        fill.notify()
                        raise _Enough  # nobody reads on: stop at this slice's end
            position += len(part)
        fill.notify()
        return position

    # -- the response -----------------------------------------------------------------------

    async def _serve(
        self, exchange: Exchange, meta: ObjectMeta, target: str, state: str, joined: set[Fill]
    ) -> None:
        request = exchange.request
        validators = Validators(meta.entity_tag, _last_modified(meta))
        headers = [
            *meta.fields,
            ("Accept-Ranges", "bytes"),
            ("Age", str(meta.age_s(time.time()))),
        ]
        outcome = evaluate(request.method, request.headers, validators)
        if outcome is Outcome.PRECONDITION_FAILED:
            raise PreconditionFailed(f"precondition failed for {meta.key}")
        # RFC 9110 §14.2: Range is defined for GET only; a HEAD's is ignored.
        range_header = request.headers.get("Range") if request.method == "GET" else None
        if range_header and not if_range_allows_partial(
            request.headers.get("If-Range"), validators
        ):
            range_header = None
        selection = parse_range(range_header, meta.size)
        if isinstance(selection, NotSatisfiable):
            raise RangeNotSatisfiable(selection.content_range())
        ranges = (
            selection.ranges
            if isinstance(selection, PartialContent)
            else (ByteRange(0, meta.size),)
        )
        if (
            state == HIT
            and request.method == "GET"
            and not all(self._stored(meta, r) for r in ranges)
        ):
            state = MISS
        exchange.cache = self._report(state)
        headers += self._x_cache(state)
        if outcome is Outcome.NOT_MODIFIED:
            exchange.start(304, headers)
            return
        if request.method == "HEAD":
            exchange.start(200, headers + [("Content-Length", str(meta.size))])
            await exchange.finish()
            return
        content_type = next((v for n, v in meta.fields if n.lower() == "content-type"), "")
        if not isinstance(selection, PartialContent):
            exchange.start(200, headers + [("Content-Length", str(meta.size))])
            await self._send(exchange, meta, target, ranges[0], joined)
        elif len(ranges) == 1:
            exchange.start(
                206,
                headers
                + [
                    ("Content-Length", str(ranges[0].length)),
                    ("Content-Range", ranges[0].content_range(meta.size)),
                ],
            )
            await self._send(exchange, meta, target, ranges[0], joined)
        else:
            plan = plan_multipart(ranges, meta.size, content_type, secrets.token_hex(16))
            kept = [(n, v) for n, v in headers if n.lower() != "content-type"]
            exchange.start(
                206,
                kept
                + [
                    ("Content-Type", plan.content_type),
                    ("Content-Length", str(plan.content_length)),
                ],
            )
            exchange.content_range = selection.summary(meta.size)
            for part_header, byte_range in plan.parts:
                await exchange.send(part_header)
                await self._send(exchange, meta, target, byte_range, joined)
            await exchange.send(plan.epilogue)

    def _report(self, result: str) -> CacheReport:
        return CacheReport(
            result,
            size_bytes=self.store.size_bytes,
            evictions=self.store.evictions,
            origin_bytes=self.origin_bytes,
        )

    def _stored(self, meta: ObjectMeta, byte_range: ByteRange) -> bool:
        size = self.settings.slice_bytes
        return all(
            self.store.has_slice(meta, index)
            for index in range(byte_range.start // size, -(-byte_range.stop // size))
        )

    async def _send(
        self,
        exchange: Exchange,
        meta: ObjectMeta,
        target: str,
        byte_range: ByteRange,
        joined: set[Fill],
    ) -> None:
        slice_bytes = self.settings.slice_bytes
        position = byte_range.start
        while position < byte_range.stop:
            index = position // slice_bytes
            base = index * slice_bytes
            end = min(byte_range.stop, base + self.store.slice_length(meta, index))
            fd = self.store.open_slice(meta, index)
            if fd is not None:
                try:
                    await exchange.send_file(fd, position - base, end - position)
                finally:
                    os.close(fd)
                if exchange.cache is not None:
                    exchange.cache.bytes_from_cache += end - position
            else:
                fill = self._filling.get((meta.key, meta.etag, index))
                if fill is None:
                    if self._disk_full_now():
                        await self._send_uncached(exchange, meta, target, position, byte_range)
                        return
                    stop = self._fill_stop(meta, index, byte_range.stop)
                    fill = self._start_fill(meta.key, target, index, stop, meta, exchange)
                    self.join(fill, exchange, joined)
                    verdict = await asyncio.shield(fill.head)
                    if verdict is _DISK_FULL:
                        await self._send_uncached(exchange, meta, target, position, byte_range)
                        return
                    if isinstance(verdict, Bypass) or verdict[0].etag != meta.etag:
                        raise UpstreamError(f"{meta.key} changed at the origin mid-response")
                    if fill.written(index) is None and not self.store.has_slice(meta, index):
                        raise UpstreamError(f"{meta.key}: slice {index} was not fetched")
                self.join(fill, exchange, joined)
                reached = await self._send_filling(
                    exchange, fill, meta, index, position - base, end - base
                )
                if reached is None:
                    continue  # committed and then evicted before we read it: look again
                if base + reached < end:  # the fill's disk is full: the rest from the origin
                    await self._send_uncached(exchange, meta, target, base + reached, byte_range)
                    return
            position = end

    async def _send_uncached(
        self, exchange: Exchange, meta: ObjectMeta, target: str, start: int, byte_range: ByteRange
    ) -> None:
        """Bytes ``[start, byte_range.stop)`` of ``meta``'s version straight from the origin,
        stored nowhere: the rest of a response the cache's disk could not take."""
        stop = byte_range.stop
        if meta.entity_tag is None:  # no strong validator to join two responses with
            raise UpstreamError(f"{meta.key}: the cache's disk is full mid-response")
        fields = [
            ("Accept-Encoding", "identity"),
            ("Range", f"bytes={start}-{stop - 1}"),
            ("If-Match", meta.entity_tag),
        ]
        user = _ClientProgress(exchange)
        async with self.origin.fetch(user, target, fields) as (upstream, head):
            placed = parse_content_range(head.headers.get("Content-Range", ""))
            if strong_etag(head.fields) != meta.etag:
                skip = -1
            elif head.status == 206 and placed is not None and placed[1] == meta.size:
                skip = start - placed[0].start if placed[0].stop >= stop else -1
            elif head.status == 200 and head.content_length == meta.size:
                skip = start  # an origin that ignores Range: its body from the first byte
            else:
                skip = -1
            if skip < 0:
                raise UpstreamError(f"{meta.key} changed at the origin mid-response")
            upstream.set_chunk_size(FILL_CHUNK_BYTES)
            position = start - skip  # the object's byte the origin's next one is
            async for chunk in upstream.relay.body():
                self.origin_bytes += len(chunk)
                piece = chunk[max(0, start - position) : stop - position]
                position += len(chunk)
                if piece:
                    await exchange.send(piece)
                    start += len(piece)
                if start >= stop:
                    break
            if start < stop:
                raise UpstreamError(f"origin body of {meta.key} ended at byte {start}")

    def _disk_full_now(self) -> bool:
        return asyncio.get_running_loop().time() < self._disk_full_until

    def _fill_stop(self, meta: ObjectMeta, index: int, range_stop: int) -> int:
        """The slice after the last one a fill from ``index`` should fetch: the end of the
        client's range, or the next slice already stored or being filled."""
        stop = -(-range_stop // self.settings.slice_bytes)
        for later in range(index + 1, stop):
            if self.store.has_slice(meta, later) or (meta.key, meta.etag, later) in self._filling:
                return later
        return stop

    async def _send_filling(
        self, exchange: Exchange, fill: Fill, meta: ObjectMeta, index: int, start: int, stop: int
    ) -> int | None:
        """Send bytes ``[start, stop)`` of slice ``index`` as ``fill`` writes them: where in
        the slice it got to, short of ``stop`` only when the fill found the disk full; None
        if the slice vanished (stored and evicted) before any of it was read."""
        while not fill.begun(index):  # the fill's body has not reached this slice yet
            await fill.changed()
        writer = fill.writers.get(index)
        fd = (
            os.dup(writer.fd)
            if writer is not None and writer.fd >= 0
            else self.store.open_slice(meta, index)
        )
        if fd is None:
            if isinstance(fill.error, DiskFull):
                return start
            if fill.error is not None:
                raise UpstreamError(f"cache fill of {meta.key} failed: {fill.error!r}")
            return None
        try:
            offset = start
            while offset < stop:
                written = fill.written(index)
                available = stop if written is None else min(written, stop)
                if available - offset >= ZERO_COPY_MIN_BYTES:
                    await exchange.send_file(fd, offset, available - offset)
                    offset = available
                elif available > offset:
                    # Just written, so in the page cache: a read here costs less than a trip
                    # to the reader pool, and a fill's first bytes reach every client sooner.
                    piece = os.pread(fd, available - offset, offset)
                    await exchange.send(piece)
                    offset += len(piece)
                elif isinstance(fill.error, DiskFull):
                    break
                elif fill.error is not None or fill.done:
                    raise UpstreamError(f"cache fill of {meta.key} failed: {fill.error!r}")
                else:
                    await fill.changed()
        finally:
            os.close(fd)
        return offset


class _WithField(Exchange):
    """An exchange whose response carries one more header field (X-Cache on a bypass): the
    route's own uncached path runs on it unchanged."""

    def __init__(self, inner: Exchange, field: tuple[str, str]) -> None:
        self._inner, self._field = inner, field
        self.request, self.limits = inner.request, inner.limits

    @property
    def upstream_status(self) -> int | None:
        return self._inner.upstream_status

    @upstream_status.setter
    def upstream_status(self, status: int | None) -> None:
        self._inner.upstream_status = status

    @property
    def content_range(self) -> str | None:
        return self._inner.content_range

    @content_range.setter
    def content_range(self, value: str | None) -> None:
        self._inner.content_range = value

    def body(self) -> AsyncIterator[bytes]:
        return self._inner.body()

    def start(
        self, status: int, headers: Iterable[tuple[str, str]], reason: str | None = None
    ) -> None:
        self._inner.start(status, [*headers, self._field], reason)

    @property
    def started(self) -> bool:
        return self._inner.started

    async def flush_headers(self) -> None:
        await self._inner.flush_headers()

    async def send(self, chunk: bytes) -> None:
        await self._inner.send(chunk)

    @property
    def last_send_waited(self) -> bool:
        return self._inner.last_send_waited

    async def send_file(self, fd: int, offset: int, length: int) -> None:
        await self._inner.send_file(fd, offset, length)

    async def begin_zero_copy(self, length: int) -> bool:
        return await self._inner.begin_zero_copy(length)

    async def send_zero_copy(self, source: ZeroCopySource) -> None:
        await self._inner.send_zero_copy(source)

    async def finish(self) -> None:
        await self._inner.finish()

    def progress(self) -> None:
        self._inner.progress()


def _last_modified(meta: ObjectMeta) -> int | None:
    for name, value in meta.fields:
        if name.lower() == "last-modified":
            return parse_http_date(value)
    return None


def _wanted(range_header: str | None, meta: ObjectMeta | None) -> tuple[int, int | None]:
    """The bytes a probe should fetch for this Range: from its first byte to its last (None:
    to the end); the size is not known yet, so a range from the end fetches the first slice."""
    size = meta.size if meta is not None else _UNKNOWN_SIZE
    selection = parse_range(range_header, size)
    if not isinstance(selection, PartialContent):
        return 0, None
    start, stop = selection.ranges[0].start, selection.ranges[-1].stop
    if meta is None and start > _UNKNOWN_SIZE // 2:
        return 0, 1
    return start, None if meta is None and stop > _UNKNOWN_SIZE // 2 else stop


_stores: dict[Path, SliceStore] = {}


def stored_bytes(settings: CacheSettings) -> int:
    """What a cache folder holds on disk, as this process indexed it (0 before first use)."""
    store = _stores.get(settings.directory)
    return 0 if store is None else store.size_bytes


def _store(settings: CacheSettings) -> SliceStore:
    """One store per folder in a process, whichever routes share it."""
    store = _stores.get(settings.directory)
    if store is None:
        store = _stores[settings.directory] = SliceStore(
            settings.directory, max_bytes=settings.max_bytes, slice_bytes=settings.slice_bytes
        )
        store.open()
    return store
