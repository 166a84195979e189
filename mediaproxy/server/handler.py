"""The one Tornado handler: it runs any integration against a real connection.

Per request it starts the two timers, runs ``integration.respond`` as a task, and feeds that
task the request body one chunk at a time (the next chunk is not read from the socket until the
integration has taken the last: flow control for uploads). A timer firing or the client leaving
cancels the task. What the client then sees depends on how far the response got: before the
headers, a status (504 for a timer); after them, the connection is closed mid-body, so a
chunked response lacks its terminating chunk and a Content-Length one comes up short. The
client can always tell a cut stream from a complete one; ``finish()`` never runs on a cut one.

Files and spliced origin bodies go out zero-copy (``mediaproxy.streaming.zerocopy``: sendfile
and splice on the loop thread, never a pool: a queued call could outlive its socket's
descriptor and write into another client's) whenever the connection is plain TCP with a
Content-Length body; a side that is not ready is waited for by handing Tornado one small copied
piece, so no descriptor is ever registered behind Tornado's back.

Reference: ``docs/design/streaming.md`` (why every flush is awaited, why exactly one is
outstanding, why aborting means closing the IOStream).
"""

from __future__ import annotations

import asyncio
import logging
import time

from tornado.httputil import HTTPServerRequest
from tornado.iostream import StreamClosedError
from tornado.web import RequestHandler, stream_request_body

from mediaproxy.config import Route
from mediaproxy.errors import (
    MediaproxyError,
    PayloadTooLarge,
    RequestError,
    ServiceUnavailable,
    Termination,
    UpstreamTimeout,
)
from mediaproxy.http.framing import request_body_framing
from mediaproxy.http.paths import Below, RequestPath, below_prefix
from mediaproxy.http.upstreams import PublicUrl
from mediaproxy.integrations.base import Integration, Request
from mediaproxy.ops.access_log import AccessLog, ExchangeRecord
from mediaproxy.ops.metrics import Metrics
from mediaproxy.server.admission import Admission, Slot
from mediaproxy.server.exchange import BodyChannel, HandlerExchange
from mediaproxy.server.usage import KeyUsage, QuotaExhausted
from mediaproxy.streaming.precedence import FirstBytes
from mediaproxy.streaming.timers import StreamTimers
from mediaproxy.tornado_internals import (
    handler_finished,
    not_streaming_body,
)

log = logging.getLogger("mediaproxy")

# nginx's code for "the client closed the connection before the response began".
CLIENT_CLOSED_REQUEST = 499

# Whether the request has a body and its declared length; None: framing Tornado refuses (400).
BodyFraming = tuple[bool, int | None] | None


@stream_request_body
class GatewayHandler(RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    may_have_body = True  # False: routed here because the request has none

    def initialize(
        self,
        route: Route,
        integration: Integration,
        admission: Admission,
        metrics: Metrics,
        access_log: AccessLog | None,
        path: RequestPath,
        framing: BodyFraming,
        first_bytes: FirstBytes,
        public_url: PublicUrl | None = None,
    ) -> None:
        self.route = route
        self.first_bytes = first_bytes
        self.framing = framing  # read once by the application, which chose the class by it
        self.public_url = public_url
        self.path = path  # read once by the application, which routed by it
        self.integration = integration
        self.admission = admission
        self.metrics = metrics
        self.access_log = access_log
        self._slot: Slot | None = None
        self.usage: KeyUsage | None = None  # the plan of the key that admitted it, if any
        self._counted_active = False  # admitted: counted in the active-streams gauge
        self.termination: Termination | None = None
        self.bytes_received = 0
        self._task: asyncio.Task[None] | None = None
        # Durations are measured on perf_counter: the loop's clock (kept for scheduling) is
        # uvloop's whole milliseconds, refreshed once per loop pass, so a fast response would
        # take "0.0 ms" and every one would fall in the first histogram bucket.
        self.started_at = time.perf_counter()

    def set_default_headers(self) -> None:
        # Never Tornado's default text/html: a response without a type stays without one.
        self.clear_header("Content-Type")
        self.set_header("Server", "mediaproxy")
        if self.application.lifecycle.retiring:  # type: ignore[attr-defined]
            self.set_header("Connection", "close")  # the client's next request: a new worker

    def compute_etag(self) -> str | None:
        return None  # integrations set validators themselves; never hash a body

    async def prepare(self) -> None:
        loop = asyncio.get_running_loop()
        limits = self.route.limits
        self._timers = StreamTimers(
            loop,
            idle_timeout_s=limits.idle_timeout_s,
            max_duration_s=limits.max_stream_duration_s,
            on_expire=self._expire,
        )
        has_body, content_length = self.framing or (False, None)
        has_body = has_body and self.may_have_body
        self._body = BodyChannel(expect_body=has_body)
        request = self.request
        refusal: MediaproxyError | None = None
        try:
            below = below_prefix(self.path, self.route.prefix, raw=self.route.raw_path)
        except RequestError as error:
            below, refusal = Below("", ()), error
        public = self.public_url
        self.exchange = HandlerExchange(
            self,
            Request(
                method=request.method or "GET",
                path=below.path,
                segments=below.segments,
                query=self.admission.forwarded_query(request.query),
                headers=self.admission.forwarded_headers(request.headers),
                remote_ip=request.remote_ip or "",
                scheme=public.scheme if public else request.protocol,
                host=public.authority if public else request.host,
                mount=public.mount if public else "",
                prefix=self.route.prefix,
                version=request.version,
                has_body=has_body,
                content_length=content_length,
            ),
            limits,
            self._body,
            self._timers,
            self.first_bytes,
            compress=self.route.compress,
            compress_min_bytes=self.route.compress_min_bytes,
        )
        self.application.active.add(self)  # type: ignore[attr-defined]
        try:
            if refusal is not None:
                raise refusal
            self._slot, plan_key = self.admission.admit(
                request.method or "GET",
                self.path.text,
                request.query,
                request.headers,
                content_length,
            )
            if plan_key is not None:
                assert self.admission.plans is not None
                self.usage = await self.admission.plans.admit(plan_key)
                if handler_finished(self):  # the client left while the store answered
                    self.usage.end()
                    return
                if self.usage.metered:
                    self.exchange.meter = self.usage
        except MediaproxyError as error:
            self._refuse(error)
            return
        self.metrics.stream_started(self.route)
        self._counted_active = True
        self._timers.start()
        if has_body:
            # Start now so the integration can stream the upload as it arrives.
            self._task = asyncio.ensure_future(self._run())

    async def data_received(self, chunk: bytes) -> None:
        self.bytes_received += len(chunk)
        if handler_finished(self):
            return  # refused; Tornado closes the connection once the answer is out
        if not self.admission.upload_allows(self.bytes_received):
            self._refuse(PayloadTooLarge(f"request body passed {self.bytes_received} bytes"))
            return
        self._timers.progress()
        await self._body.put(chunk)

    async def _respond(self) -> None:
        """Every method: the request has been read; end its body and wait for the response.

        A request without a body starts its integration only here (a response finished before
        Tornado has marked the request read would cost the connection its keep-alive), and in
        Tornado's own task for this request: a second task per request would cost more than
        the whole of a small response. Cancelling it reaches only ``_run``: nothing is awaited
        here after it.
        """
        self._body.end()
        if self._task is None:
            self._task = asyncio.current_task()
            await self._run()
        else:
            await self._task

    get = head = post = put = patch = delete = options = _respond

    async def _run(self) -> None:
        try:
            await self.integration.respond(self.exchange)
            if not handler_finished(self):
                await self.exchange.finish()
            self.termination = self.termination or Termination.COMPLETE
        except asyncio.CancelledError:
            # A timer or the client ended it; self.termination already says which.
            if self.termination in (Termination.IDLE_TIMEOUT, Termination.MAX_DURATION):
                self._fail(UpstreamTimeout(f"{self.termination.value} before the response began"))
            elif self.termination is Termination.SHUTDOWN:
                self._fail(ServiceUnavailable("shutting down", headers={"Retry-After": "1"}))
        except StreamClosedError:
            self.termination = self.termination or Termination.CLIENT_CLOSED
        except MediaproxyError as error:
            log.info("%s %s: %s (%d)", self.request.method, self.path.raw, error, error.status)
            self.termination = self.termination or (
                Termination.QUOTA
                if isinstance(error, QuotaExhausted)
                else Termination.REJECTED
                if error.status < 500
                else Termination.UPSTREAM_ERROR
            )
            self._fail(error)
        except Exception:
            log.exception("%s %s failed", self.request.method, self.path.raw)
            self.termination = self.termination or Termination.UPSTREAM_ERROR
            self._fail(MediaproxyError("unexpected error"))
        finally:
            self._timers.cancel()
            self._body.close()
            if not handler_finished(self):
                # Every path has either answered or closed the stream by now; finishing a
                # closed stream writes nothing, and it runs on_finish's bookkeeping.
                self._abort()
                self.finish()

    def _refuse(self, error: MediaproxyError) -> None:
        """Turn the request away (admission, an upload past its limit): a status, or a cut."""
        log.info(
            "%s %s (route %s) refused: %s (%d)",
            self.request.method,
            self.path.raw,
            self.route.prefix,
            error,
            error.status,
        )
        self.termination = Termination.REJECTED
        self._body.close()
        if self._task is not None:
            self._task.cancel()
        self._fail(error)

    def _fail(self, error: MediaproxyError) -> None:
        """A status if the response has not begun, else a cut connection."""
        if self.exchange.started or handler_finished(self):
            self._abort()
            return
        if self.request.connection.stream.closed():  # type: ignore[union-attr]
            return
        self.clear()
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.exchange.status = error.status
        self.exchange.content_range = error.headers.get("Content-Range")  # a 416's
        self.finish(f"{error.status} {error.phrase}\n")

    def _abort(self) -> None:
        """Close the client connection mid-response so it cannot look complete."""
        stream = self.request.connection.stream  # type: ignore[union-attr]
        if not stream.closed():
            stream.close()

    def _expire(self, reason: Termination) -> None:
        self.terminate(reason)

    def terminate(self, reason: Termination) -> None:
        """End this exchange now (a timer, the client, shutdown), whatever it is doing."""
        if self.termination is None:
            self.termination = reason
            level = logging.INFO if reason is Termination.CLIENT_CLOSED else logging.WARNING
            log.log(
                level,
                "%s %s (route %s) cut: %s after %d bytes sent, %d received",
                self.request.method,
                self.path.raw,
                self.route.prefix,
                reason.value,
                self.exchange.bytes_sent,
                self.bytes_received,
            )
        if self.exchange.started:
            self._abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self._task is None and hasattr(self, "exchange") and not handler_finished(self):
            # Gone before the response began: Tornado will not call a method now.
            self.termination = Termination.CLIENT_CLOSED
            self._timers.cancel()
            self.finish()
        elif self._task is not None and not self._task.done():
            self.terminate(Termination.CLIENT_CLOSED)

    def on_finish(self) -> None:
        self.application.active.discard(self)  # type: ignore[attr-defined]
        exchange: HandlerExchange | None = getattr(self, "exchange", None)  # None: no prepare()
        if exchange is not None:
            self.first_bytes.started(exchange)  # or ended without a body byte
        if self._slot is not None:
            self._slot.release()
        if self.usage is not None:
            self.usage.end()
        if self._counted_active:
            self.metrics.stream_ended(self.route)
        record = self._record()
        self.metrics.observe(record)
        if self.access_log is not None:
            self.access_log.write(record)

    def _record(self) -> ExchangeRecord:
        """What the access log and the metrics say about this exchange."""
        status = self.get_status()
        bytes_sent, ttfb_s, upstream_status, started = 0, None, None, False
        content_range, cache = None, None
        exchange: HandlerExchange | None = getattr(self, "exchange", None)  # None: no prepare()
        if exchange is not None:
            bytes_sent, upstream_status, started = (
                exchange.bytes_sent,
                exchange.upstream_status,
                exchange.started,
            )
            content_range, cache = exchange.content_range, exchange.cache
            if exchange.first_byte_at is not None:
                ttfb_s = exchange.first_byte_at - self.started_at
        # None: finish() ran with nothing wrong, whatever the status (an origin's 404 relayed
        # whole is a complete exchange); or Tornado answered before prepare() (a 405).
        termination = self.termination or (
            Termination.COMPLETE if exchange is not None or status < 400 else Termination.REJECTED
        )
        if termination is Termination.CLIENT_CLOSED and not started:
            status = CLIENT_CLOSED_REQUEST
        return ExchangeRecord(
            route=self.route.prefix,
            integration=self.route.integration,
            method=self.request.method or "",
            path=self.path.raw,
            status=status,
            bytes_sent=bytes_sent,
            bytes_received=self.bytes_received,
            ttfb_s=ttfb_s,
            duration_s=time.perf_counter() - self.started_at,
            termination=termination,
            client=self.request.remote_ip or "",
            upstream_status=upstream_status,
            request_range=self.request.headers.get("Range"),
            content_range=content_range,
            cache=cache,
        )


@not_streaming_body
class BodylessGatewayHandler(GatewayHandler):
    """GatewayHandler for a request without a body, which has nothing to stream in.

    Tornado then runs the handler once the request is read, in a single step, instead of
    handing over through ``prepare`` and a body future: fewer futures and loop turns per
    request, which for a small response is a large share of its cost. Everything else is
    GatewayHandler's.
    """

    may_have_body = False


# Tornado parses these request bodies itself when not streaming, and turns a malformed one
# (an empty multipart body, say) into a 400: such requests keep the streaming handler.
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def body_framing(request: HTTPServerRequest) -> BodyFraming:
    """How Tornado will read this request's body (``request_body_framing``), read once."""
    headers = request.headers
    # ``in`` first: on HTTPHeaders a miss costs half of what get() pays for its KeyError.
    return request_body_framing(
        headers["Transfer-Encoding"] if "Transfer-Encoding" in headers else None,
        headers["Content-Length"] if "Content-Length" in headers else None,
    )


def handler_class_for(request: HTTPServerRequest, framing: BodyFraming) -> type[GatewayHandler]:
    headers = request.headers
    if framing is None:
        return BodylessGatewayHandler  # Tornado refuses the framing before the handler runs
    if framing[0] or (
        "Content-Type" in headers and headers["Content-Type"].startswith(_FORM_TYPES)
    ):
        return GatewayHandler
    return BodylessGatewayHandler
