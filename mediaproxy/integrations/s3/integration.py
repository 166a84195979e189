"""GET and HEAD of one object (or, with ``list = true``, one folder) in a bucket.

``/prefix/a/b.mp4`` is the object ``key_prefix + "a/b.mp4"``, built from the request's one
normalised path (``mediaproxy.http.paths``: decoded once, dot and empty segments refused), so
a key never leaves the prefix.
The client's query is never forwarded (S3 would take ``response-content-type`` or
``versionId`` from it); ``?download`` is the gateway's own, as on file routes.

What is forwarded: Range (GET only, as RFC 9110 defines ranges for GET alone), If-Range, and
the four preconditions; the store evaluates them. If-Range is also enforced here, because
not every store honours it: a 206 whose validators do not match the client's If-Range is
dropped and the object fetched whole. What comes back: the store's status, ETag,
Last-Modified, Content-Length, Content-Range, Accept-Ranges and the object's own
Content-Type, -Encoding, -Language, -Disposition, Cache-Control and Expires; never the
store's ``x-amz-*`` metadata, request ids or Server.

A store that says ``binary/octet-stream`` or ``application/octet-stream`` (what most uploads
get) has its type sniffed from the object's first bytes, as file routes do: from the body
itself when the response starts at byte 0, else from a small ranged GET, and remembered per
(key, ETag), so a HEAD and a later range say what the GET said.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import NoReturn
from urllib.parse import parse_qs

from tornado.httputil import HTTPHeaders, RequestStartLine

from mediaproxy.config import Route
from mediaproxy.errors import (
    MethodNotAllowed,
    NotFound,
    RangeNotSatisfiable,
    RequestError,
    UpstreamError,
)
from mediaproxy.http.conditional import Validators, if_range_allows_partial, parse_http_date
from mediaproxy.http.disposition import content_disposition
from mediaproxy.http.grammar import parse_digits_or_none
from mediaproxy.integrations.base import Exchange, Integration
from mediaproxy.integrations.cache.serve import OriginUser, RangeCache
from mediaproxy.integrations.http_proxy.relay import ResponseHead
from mediaproxy.integrations.http_proxy.route import (
    RoundTrip,
    UpstreamClient,
    UpstreamUser,
    relay_body,
)
from mediaproxy.integrations.s3.failures import (
    MAX_ERROR_BYTES,
    StoreError,
    advice,
    client_error,
    needs_code,
)
from mediaproxy.integrations.s3.listing import (
    MAX_PAGE_BYTES,
    HtmlListing,
    JsonListing,
    Page,
    PageError,
    list_query,
    parse_page,
    wants_json,
)
from mediaproxy.integrations.s3.settings import S3Settings
from mediaproxy.integrations.s3.signer import Signer
from mediaproxy.streaming import sniff

log = logging.getLogger("mediaproxy")

DOWNLOAD_FLAG = "download"
PRECONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
PASSED_BACK = (
    "ETag",
    "Last-Modified",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Content-Type",
    "Content-Encoding",
    "Content-Language",
    "Content-Disposition",
    "Cache-Control",
    "Expires",
)
# What stores call "no type given": AWS's default and the registered one.
UNTYPED = frozenset({"binary/octet-stream", "application/octet-stream"})
SNIFFED_TYPES_KEPT = 4096


class _Cut(Exception):
    """A body longer than the caller wanted: leave the exchange, closing its connection."""


class _StaleRange(Exception):
    """The store sent a range although the client's If-Range no longer matches."""


class SniffedTypes:
    """The sniffed Content-Type of recently served (key, ETag) pairs, least recent dropped."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._types: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    def get(self, key: str, etag: str) -> str | None:
        found = self._types.get((key, etag))
        if found is not None:
            self._types.move_to_end((key, etag))
        return found

    def put(self, key: str, etag: str, content_type: str) -> None:
        self._types[(key, etag)] = content_type
        if len(self._types) > self.capacity:
            self._types.popitem(last=False)


class S3Integration(Integration):
    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self.settings: S3Settings = route.settings
        self.client = UpstreamClient(
            self.settings.store,
            max_idle=self.settings.max_idle_connections,
            connect_timeout_s=self.settings.connect_timeout_s,
        )
        self.signer = Signer(self.settings)
        self.types = SniffedTypes(SNIFFED_TYPES_KEPT)
        self.cache = (
            None
            if self.settings.cache is None
            else RangeCache(self.settings.cache, route.prefix, _CacheOrigin(self))
        )

    async def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.client.close()

    async def respond(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(request.method, ("GET", "HEAD"))
        segments, folder = key_segments(request.segments)
        if folder:
            if not self.settings.listing:
                raise NotFound(f"{request.path!r} names a folder and the route has no listing")
            if not request.path:  # "/media": its listing's relative links need "/media/"
                await _redirect_to_folder(exchange)
                return
            await self._send_listing(exchange, "".join(f"{s}/" for s in segments))
            return
        key = self.settings.key_prefix + "/".join(segments)
        if self.cache is None:
            await self._respond_object(exchange, key, segments[-1])
            return

        async def uncached(exchange: Exchange) -> None:
            await self._respond_object(exchange, key, segments[-1])

        await self.cache.respond(
            exchange,
            uncached,
            target=self.settings.object_target(key),
            restricted=self.route.access.restricted,
        )

    async def _respond_object(self, exchange: Exchange, key: str, name: str) -> None:
        if await self._send_object(exchange, key, name):
            return
        # No such object. With listings on, "/media/videos" may name a folder.
        if await self._has_keys_below(exchange, key + "/"):
            await _redirect_to_folder(exchange)
            return
        raise NotFound(f"no object {key!r}")

    # --- one object ---------------------------------------------------------------------------

    async def _send_object(self, exchange: Exchange, key: str, name: str) -> bool:
        """Relay the object, or raise what the store's error means; False: no such object
        on a route with listings, which may be a folder (the caller looks)."""
        request = exchange.request
        fields = [
            (field, request.headers[field])
            for field in PRECONDITIONS
            if field in request.headers and _plain(request.headers[field])
        ]
        range_header = request.headers.get("Range") if request.method == "GET" else None
        if_range = request.headers.get("If-Range") if range_header else None
        ranged = list(fields)
        if range_header and _plain(range_header):
            ranged.append(("Range", range_header))
            if if_range is not None and _plain(if_range):
                ranged.append(("If-Range", if_range))
        try:
            error = await self._try_object(exchange, key, name, ranged, if_range)
        except _StaleRange:
            error = await self._try_object(exchange, key, name, fields, None)
        if error is None:
            await exchange.finish()
            return True
        if not error.code and needs_code(error.status):
            # A HEAD's error has no document: a GET of one byte gets the store to say why.
            probe, body = await self._fetch_small(
                exchange,
                "GET",
                self.settings.object_target(key),
                [("Range", "bytes=0-0")],
                MAX_ERROR_BYTES,
            )
            if probe.status >= 300:
                error = StoreError.parse(probe.status, body, probe.headers.get("Retry-After"))
        if self.settings.listing and error.status == 404 and error.code in ("", "NoSuchKey"):
            return False
        self._fail(error)
        await self._fail_range(exchange, key, error)

    async def _try_object(
        self,
        exchange: Exchange,
        key: str,
        name: str,
        fields: list[tuple[str, str]],
        if_range: str | None,
    ) -> StoreError | None:
        """Relay the object's response; None once it is sent, else what the store said."""
        error_body = bytearray()
        try:
            async with self._request(
                exchange, exchange.request.method, self.settings.object_target(key), fields
            ) as (upstream, head):
                if head.status in (200, 206, 304):
                    if head.status == 206 and not if_range_allows_partial(
                        if_range, _validators(head.headers)
                    ):
                        raise _StaleRange(key)
                    await self._relay(exchange, upstream, head, key, name)
                    return None
                async for chunk in upstream.relay.body():
                    error_body += chunk
                    if len(error_body) > MAX_ERROR_BYTES:
                        raise _Cut()
        except _Cut:
            pass
        return StoreError.parse(head.status, bytes(error_body), head.headers.get("Retry-After"))

    async def _relay(
        self, exchange: Exchange, upstream: RoundTrip, head: ResponseHead, key: str, name: str
    ) -> None:
        request = exchange.request
        fields = head.headers
        headers = [(field, fields[field]) for field in PASSED_BACK if field in fields]
        if head.status == 304:
            exchange.start(
                304,
                [
                    (n, v)
                    for n, v in headers
                    if n in ("ETag", "Last-Modified", "Cache-Control", "Expires")
                ],
            )
            return
        if "Accept-Ranges" not in fields:
            headers.append(("Accept-Ranges", "bytes"))
        if request.query and DOWNLOAD_FLAG in parse_qs(request.query, keep_blank_values=True):
            headers = [(n, v) for n, v in headers if n != "Content-Disposition"]
            headers.append(("Content-Disposition", content_disposition(name)))
        held: list[bytes] = []
        body: AsyncIterator[bytes] | None = None
        if _media_type(fields.get("Content-Type")) in UNTYPED:
            etag = fields.get("ETag", "")
            content_type = self.types.get(key, etag)
            if content_type is None and request.method == "GET" and _starts_at_zero(head):
                body = upstream.relay.body()
                content_type = await self._sniff_body(body, held, head, key, etag, name)
            if content_type is None:
                content_type = await self._sniff_object(exchange, key, etag, name)
            headers = [(n, v) for n, v in headers if n != "Content-Type"]
            headers.append(("Content-Type", content_type))
        exchange.start(head.status, headers)
        if request.method == "HEAD":
            return
        if held:
            await exchange.send(b"".join(held))
        elif not upstream.relay.body_waiting():
            await exchange.flush_headers()  # a slow body should not hold the headers back
        await relay_body(exchange, upstream, body)

    async def _sniff_body(
        self,
        body: AsyncIterator[bytes],
        held: list[bytes],
        head: ResponseHead,
        key: str,
        etag: str,
        name: str,
    ) -> str | None:
        """The type from the response's own first bytes, kept in ``held`` to be sent."""
        size = _object_size(head)
        wanted = sniff.SNIFF_BYTES if size is None else min(sniff.SNIFF_BYTES, size)
        taken = 0
        async for chunk in body:
            held.append(chunk)
            taken += len(chunk)
            if taken >= wanted:
                break
        if taken < wanted:
            return None  # a short range: its bytes are not the object's first ones
        content_type = sniff.content_type(b"".join(held)[: sniff.SNIFF_BYTES], name)
        self.types.put(key, etag, content_type)
        return content_type

    async def _sniff_object(self, exchange: Exchange, key: str, etag: str, name: str) -> str:
        """The type from the object's first bytes, fetched apart (a HEAD, a later range)."""
        fields = [("Range", f"bytes=0-{sniff.SNIFF_BYTES - 1}")]
        if etag:
            fields.append(("If-Match", etag))  # the same version the response describes
        probe, data = await self._fetch_small(
            exchange, "GET", self.settings.object_target(key), fields, sniff.SNIFF_BYTES
        )
        if probe.status == 416:  # no byte 0: the object is empty
            data = b""
        elif probe.status not in (200, 206):
            log.info(
                "s3 bucket %s: sniffing %r: %s",
                self.settings.bucket,
                key,
                StoreError.parse(probe.status, data),
            )
            return sniff.OCTET_STREAM
        content_type = sniff.content_type(data, name)
        self.types.put(key, etag, content_type)
        return content_type

    # --- one folder ---------------------------------------------------------------------------

    async def _send_listing(self, exchange: Exchange, folder: str) -> None:
        """The folder's entries, one ListObjectsV2 page at a time as the client takes them."""
        request = exchange.request
        prefix = self.settings.key_prefix + folder
        page = await self._list_page(exchange, prefix, None)
        if folder and not page.entries:
            raise NotFound(f"no key below {prefix!r}")
        path = request.prefix.rstrip("/") + "/" + folder
        renderer = (
            JsonListing(path)
            if wants_json(request.headers.get("Accept"))
            else HtmlListing(path, has_parent=bool(folder))
        )
        exchange.start(
            200,
            [
                ("Content-Type", renderer.content_type),
                ("Vary", "Accept"),
                ("Cache-Control", "no-cache"),
            ],
        )
        if request.method == "HEAD":
            await exchange.finish()
            return
        await exchange.send(renderer.head() + renderer.page(page))
        while page.next_token is not None:
            page = await self._list_page(exchange, prefix, page.next_token)
            await exchange.send(renderer.page(page))
        await exchange.send(renderer.tail())
        await exchange.finish()

    async def _has_keys_below(self, exchange: Exchange, prefix: str) -> bool:
        page = await self._list_page(exchange, prefix, None, max_keys=1)
        return bool(page.entries)

    async def _list_page(
        self, exchange: Exchange, prefix: str, token: str | None, max_keys: int | None = None
    ) -> Page:
        head, body = await self._fetch_small(
            exchange,
            "GET",
            self.settings.bucket_target,
            [],
            MAX_PAGE_BYTES,
            list_query(prefix, token, max_keys),
        )
        if head.status != 200:
            self._fail(StoreError.parse(head.status, body, head.headers.get("Retry-After")))
            raise UpstreamError(f"listing {prefix!r}: the store answered {head.status}")
        if len(body) >= MAX_PAGE_BYTES:
            raise UpstreamError(f"listing {prefix!r}: a page larger than {MAX_PAGE_BYTES} bytes")
        try:
            return parse_page(body, prefix)
        except PageError as error:
            raise UpstreamError(f"listing {prefix!r}: {error}") from error

    # --- failures -----------------------------------------------------------------------------

    def _fail(self, error: StoreError) -> None:
        """Raise the client's error for what the store said, logging what to fix; return
        only for a 416, which ``_fail_range`` completes with the object's size."""
        fix = advice(error, region=self.settings.region, credentials=self.signer.source)
        if fix is not None:
            log.warning(
                "s3 route %s (bucket %s): %s; %s",
                self.route.prefix,
                self.settings.bucket,
                fix,
                error,
            )
        failure = client_error(error, hide_forbidden=self.settings.hide_forbidden)
        if not isinstance(failure, RangeNotSatisfiable):
            raise failure

    async def _fail_range(self, exchange: Exchange, key: str, error: StoreError) -> NoReturn:
        """416, with the object's size in Content-Range as RFC 9110 §15.5.17 wants it."""
        size = error.object_size
        if size is None:
            probe, _ = await self._fetch_small(
                exchange, "HEAD", self.settings.object_target(key), [], 0
            )
            size = probe.content_length if probe.status == 200 else None
        if size is None:
            raise UpstreamError(f"{error}, and the object's size is unknown")
        raise RangeNotSatisfiable(f"bytes */{size}")

    # --- requests to the store ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _request(
        self,
        exchange: UpstreamUser,
        method: str,
        path: str,
        fields: Iterable[tuple[str, str]],
        query: str = "",
    ) -> AsyncIterator[tuple[RoundTrip, ResponseHead]]:
        """A signed request for ``path`` (and ``query``, both encoded), sent as the proxy's."""
        target = path + (f"?{query}" if query else "")
        signed = [("Host", self.settings.store.authority), *fields]
        await self.signer.sign(method, target, signed)
        async with self.client.exchange(
            exchange, RequestStartLine(method, target, "HTTP/1.1"), signed
        ) as pair:
            yield pair

    async def _fetch_small(
        self,
        exchange: Exchange,
        method: str,
        path: str,
        fields: Iterable[tuple[str, str]],
        limit_bytes: int,
        query: str = "",
    ) -> tuple[ResponseHead, bytes]:
        """A response read whole up to ``limit_bytes``; a longer body is cut there."""
        data = bytearray()
        try:
            async with self._request(exchange, method, path, fields, query) as (upstream, head):
                async for chunk in upstream.relay.body():
                    data += chunk
                    if len(data) > limit_bytes:
                        raise _Cut()
        except _Cut:
            pass
        return head, bytes(data[:limit_bytes])


class _CacheOrigin:
    """The store as the cache asks it for bytes: a signed GET of the object."""

    def __init__(self, route: S3Integration) -> None:
        self._route = route

    def fetch(
        self, user: OriginUser, target: str, fields: list[tuple[str, str]]
    ) -> contextlib.AbstractAsyncContextManager[tuple[RoundTrip, ResponseHead]]:
        return self._route._request(user, "GET", target, fields)


async def _redirect_to_folder(exchange: Exchange) -> None:
    """301 to the same path with a trailing "/", where a listing's relative links work."""
    request = exchange.request
    location = request.prefix.rstrip("/") + request.path + "/"
    exchange.start(301, [("Location", location), ("Content-Length", "0")])
    await exchange.finish()


def key_segments(segments: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """The request's decoded segments as parts of a key, and whether they name a folder.

    The path was normalised once at the boundary, which refuses dot and empty segments; they
    are refused here again because the key must never leave ``key_prefix`` whatever a route
    lets through. A folder is the route's root or a path ending in "/".
    """
    folder = not segments or segments[-1] == ""
    parts = segments[:-1] if folder and segments else segments
    for part in parts:
        if part in ("", ".", "..") or "/" in part:
            raise RequestError(f"segment {part!r} cannot be part of an object key")
        try:
            part.encode("utf-8")
        except UnicodeEncodeError as error:  # octets that are not UTF-8, kept as surrogates
            raise RequestError(f"segment {part!r} is not UTF-8") from error
    return parts, folder


def _plain(value: str) -> bool:
    """Printable ASCII: what is signed is then byte for byte what is sent."""
    return value.isascii() and value.isprintable()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower() or "application/octet-stream"


def _validators(fields: HTTPHeaders) -> Validators:
    modified = fields.get("Last-Modified")
    modified_s = parse_http_date(modified) if modified else None
    try:
        return Validators(fields.get("ETag"), modified_s)
    except ValueError:  # not an entity-tag: it can match no If-Range
        return Validators(None, modified_s)


def _starts_at_zero(head: ResponseHead) -> bool:
    return head.status == 200 or head.headers.get("Content-Range", "").startswith("bytes 0-")


def _object_size(head: ResponseHead) -> int | None:
    """The whole object's size: Content-Length of a 200, the complete-length of a 206."""
    if head.status == 200:
        return head.content_length
    complete_length = head.headers.get("Content-Range", "").rpartition("/")[2]
    return parse_digits_or_none(complete_length)
