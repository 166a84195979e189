"""Wiring: a validated Config into a Tornado application, a listening server and its shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest, split_host_and_port
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from mediaproxy import integrations
from mediaproxy.access_control import AdminAccess
from mediaproxy.config import Config, ConfigError
from mediaproxy.errors import ListenError, RequestError, Termination
from mediaproxy.http import paths
from mediaproxy.http.grammar import MAX_INT64
from mediaproxy.integrations.base import Integration
from mediaproxy.ops import status
from mediaproxy.ops.access_log import AccessLog, open_access_log
from mediaproxy.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mediaproxy.ops.metrics import Metrics
from mediaproxy.ops.metrics_dir import multiprocess_dir
from mediaproxy.server import eventloop
from mediaproxy.server.admission import Admission, StreamSlots
from mediaproxy.server.connections import GatewayServer
from mediaproxy.server.fleet_view import FleetStreams
from mediaproxy.server.handler import GatewayHandler, body_framing, handler_class_for
from mediaproxy.server.shared_table import PrivateTable, SharedTable
from mediaproxy.server.usage import LocalStore, PlanGuard, UsageStore
from mediaproxy.streaming.precedence import FirstBytes
from mediaproxy.tornado_internals import open_connections, reason_phrase

log = logging.getLogger("mediaproxy")


class PlainHandler(RequestHandler):
    """Gateway-owned endpoints: short plain-text answers, never Tornado's HTML pages."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Server", "mediaproxy")
        if self.application.lifecycle.retiring:  # type: ignore[attr-defined]
            self.set_header("Connection", "close")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(f"{status_code} {reason_phrase(self)}\n")


@dataclass
class Lifecycle:
    draining: bool = False  # shutdown began: running streams finish, nothing new should come
    # Replaced by a new worker (a reload): accepts no connection, serves the requests that
    # reach it on connections it has, and closes each after its response.
    retiring: bool = False


class HealthHandler(PlainHandler):
    """200 while serving; 503 once draining, so a load balancer moves traffic away even over a
    connection it keeps alive."""

    def initialize(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def get(self) -> None:
        if self.lifecycle.draining:
            self.set_status(503)
            self.set_header("Connection", "close")
            self.finish("draining\n")
        else:
            self.finish("ok\n")

    head = get


class MetricsHandler(status.AdminOnly, PlainHandler):
    def initialize(self, metrics: Metrics, admin: AdminAccess) -> None:
        self.metrics = metrics
        self.admin = admin

    def get(self) -> None:
        self.set_header("Content-Type", METRICS_CONTENT_TYPE)
        self.finish(self.metrics.exposition())


class NotFoundHandler(PlainHandler):
    def prepare(self) -> None:
        self.send_error(404)


class BadPathHandler(PlainHandler):
    """A request-target that is no path at all (a malformed escape, not origin-form)."""

    def initialize(self, detail: str) -> None:
        self.detail = detail

    def prepare(self) -> None:
        log.info(
            "%s %s refused: %s (400)", self.request.method, self.request.uri[:200], self.detail
        )
        self.send_error(400)


class GatewayApplication(Application):
    """Reads the request path once (``paths.normalise_path``) and routes by that reading:
    the gateway's own endpoints first, then the longest route prefix. A route goes to
    GatewayHandler, or to its bodyless twin when the request has no body."""

    def __init__(
        self, rules: list[Any], routes: dict[str, dict[str, Any]], **settings: Any
    ) -> None:
        super().__init__(rules, **settings)
        self.gateway_routes = routes  # prefix -> GatewayHandler's arguments
        self._prefixes = list(routes)

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        authority, target = paths.split_absolute_form(request.path)
        if authority is not None:
            request.host = authority  # RFC 9112 §3.2.2: the target's host, not the Host field
            request.host_name = split_host_and_port(authority.lower())[0]  # as Tornado does
        try:
            path = paths.normalise_path(target)
        except RequestError as error:
            return self.get_handler_delegate(request, BadPathHandler, {"detail": str(error)})
        # Every later reader of the request (endpoints, the status page, logs) sees the one
        # normalised path; the path as sent stays in request.uri and in RequestPath.raw.
        request.path = path.text
        endpoint = self.default_router.find_handler(request)
        if endpoint is not None:
            return endpoint
        prefix = paths.match_prefix(path, self._prefixes)
        if prefix is None:
            if path.refusal is not None:  # no route takes it raw: ambiguous stays a 400
                return self.get_handler_delegate(request, BadPathHandler, {"detail": path.refusal})
            return self.get_handler_delegate(request, NotFoundHandler)
        return self.get_handler_delegate(
            request, GatewayHandler, {**self.gateway_routes[prefix], "path": path}
        )

    def get_handler_delegate(
        self,
        request: HTTPServerRequest,
        target_class: type[RequestHandler],
        target_kwargs: dict[str, Any] | None = None,
        path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> Any:
        if target_class is GatewayHandler:
            framing = body_framing(request)
            target_class = handler_class_for(request, framing)
            target_kwargs = {**(target_kwargs or {}), "framing": framing}
        return super().get_handler_delegate(
            request, target_class, target_kwargs, path_args, path_kwargs
        )


@dataclass
class Gateway:
    """The application and what must be released with it."""

    config: Config
    application: Application
    metrics: Metrics
    access_log: AccessLog | None
    lifecycle: Lifecycle
    integrations: list[Integration]
    slots: StreamSlots
    owns_table: bool = False  # made for this gateway alone (one process), not a worker's
    plans: PlanGuard | None = None
    publishing: asyncio.Task[None] | None = None  # this worker's streams, for its siblings' page
    first_bytes: FirstBytes = field(default_factory=FirstBytes)  # every stream of the process

    @property
    def active(self) -> set[GatewayHandler]:
        active: set[GatewayHandler] = self.application.active  # type: ignore[attr-defined]
        return active

    async def close(self, successor: Gateway | None = None) -> None:
        """Release what is this gateway's own; with a ``successor`` (a reload), what it shares
        with it stays open."""
        for integration in self.integrations:
            await integration.close()
        if self.publishing is not None:
            self.publishing.cancel()
            await asyncio.wait([self.publishing])  # its board closes; its end never raises here
        if self.plans is not None:
            await self.plans.close()
        if self.access_log is not None and (
            successor is None or successor.access_log is not self.access_log
        ):
            self.access_log.close()
        if self.owns_table and successor is None:
            self.slots.table.close()


def make_gateway(
    config: Config, table: SharedTable | None = None, previous: Gateway | None = None
) -> Gateway:
    """The gateway for ``config``; ``table`` is the instance's (the workers' parent makes it),
    or None for a gateway that is the whole instance. A reload passes the ``previous``
    gateway: the new one shares its running streams, metrics, lifecycle and table (and its
    access log, if the destination is the same)."""
    built: list[Integration] = []
    admin = AdminAccess(config.server.admin_api_keys)
    if previous is None:
        active: set[GatewayHandler] = set()
        metrics = Metrics(config.routes, reveal_restricted=admin.protected)
        access_log = open_access_log(config.server.access_log)
        owns_table = table is None
        table = table or PrivateTable(columns=1)
        lifecycle = Lifecycle()
        first_bytes = FirstBytes()
    else:
        active, metrics, lifecycle = previous.active, previous.metrics, previous.lifecycle
        first_bytes = previous.first_bytes  # the old generation's streams still give way
        metrics.use_routes(config.routes, reveal_restricted=admin.protected)
        same_log = previous.config.server.access_log == config.server.access_log
        access_log = previous.access_log if same_log else open_access_log(config.server.access_log)
        owns_table, table = previous.owns_table, previous.slots.table
    slots = StreamSlots(config.limits.max_concurrent_streams, table)
    plans = (
        None
        if not config.plans
        else PlanGuard(
            config.shared_state,
            config.plans,
            usage_store(config, slots.table),
            metrics,
        )
    )
    rules: list[Any] = [(r"/healthz", HealthHandler, {"lifecycle": lifecycle})]
    # A surface switched off stays reserved: 404, never handed to a catch-all '/' route.
    if config.server.metrics:
        rules.append((r"/metrics", MetricsHandler, {"metrics": metrics, "admin": admin}))
    else:
        rules.append((r"/metrics", NotFoundHandler))
    publishing = None
    if config.server.status_page:
        folder = multiprocess_dir()
        board: status.StreamBoard | None = None if folder is None else status.SiblingStreams(folder)
        shared = config.shared_state
        if shared.redis_url is not None:
            board = FleetStreams(shared.redis_url, shared.timeout_s, shared.key_prefix, board)
        rules += status.rules(config, active, admin, slots, board)
        if board is not None:
            publishing = asyncio.ensure_future(status.publish(board, active, admin))
    else:
        rules.append((re.escape(status.PREFIX) + "(?:/.*)?", NotFoundHandler))
    routes: dict[str, dict[str, Any]] = {}
    for route in config.routes:
        integration = integrations.build(route)
        built.append(integration)
        routes[route.prefix] = {
            "route": route,
            "integration": integration,
            "admission": Admission(route, slots, plans),
            "metrics": metrics,
            "access_log": access_log,
            "public_url": config.server.public_url,
            "first_bytes": first_bytes,
        }
    application = GatewayApplication(
        rules, routes, log_function=lambda handler: None
    )  # we log our own access lines
    application.active = active  # type: ignore[attr-defined]
    application.lifecycle = lifecycle  # type: ignore[attr-defined]
    return Gateway(
        config,
        application,
        metrics,
        access_log,
        lifecycle,
        built,
        slots,
        owns_table,
        plans,
        publishing,
        first_bytes,
    )


def usage_store(config: Config, table: SharedTable) -> UsageStore:
    """Where plans count: Redis when configured (the fleet), else the instance's table."""
    if config.shared_state.redis_url is None:
        return LocalStore(table)
    from mediaproxy.server.redis_store import RedisStore  # the optional redis extra

    return RedisStore(config.shared_state)


@dataclass
class RunningServer:
    gateway: Gateway
    server: HTTPServer
    sockets: list[socket.socket]
    retiring: list[asyncio.Task[None]] = field(default_factory=list)  # gateways reloaded away

    @property
    def port(self) -> int:
        port: int = self.sockets[0].getsockname()[1]
        return port

    def reload(self, config: Config) -> None:
        """New requests are served with ``config`` from now on; streams running go on with
        the config they started with, whose integrations close when the last one ends."""
        previous = self.gateway
        self.gateway = make_gateway(restartless(previous.config, config), previous=previous)
        # Tornado asks the server's callback for every new request, kept-alive ones too.
        self.server.request_callback = self.gateway.application
        self.retiring.append(asyncio.ensure_future(self._retire(previous)))

    async def _retire(self, previous: Gateway) -> None:
        while any(handler.application is previous.application for handler in self.gateway.active):
            await asyncio.sleep(0.05)
        await previous.close(successor=self.gateway)

    async def shutdown(self, graceful: bool = False) -> None:
        """Stop accepting, let running streams finish within the grace period, cut the rest.

        ``graceful`` (a worker being replaced): requests still arriving on open connections are
        served, not refused, each connection closing after its response; it ends when they
        have all closed, or at the end of the grace period.
        """
        lifecycle = self.gateway.lifecycle
        if graceful:
            lifecycle.retiring = True
        else:
            lifecycle.draining = True
            self.gateway.slots.close()
        self.server.stop()
        grace_s = self.gateway.config.server.shutdown_grace_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline and (
            self.gateway.active or (graceful and open_connections(self.server))
        ):
            await asyncio.sleep(0.05)
        for handler in list(self.gateway.active):
            handler.terminate(Termination.SHUTDOWN)
        await self.server.close_all_connections()
        await asyncio.gather(*self.retiring)
        await self.gateway.close()


# [server] settings bound to the listening socket or the process: a reload keeps them.
RESTART_ONLY = ("address", "port", "processes", "event_loop", "max_header_bytes", "tls")


def restartless(running: Config, loaded: Config) -> Config:
    """``loaded`` with the settings a reload cannot change kept as they run (and said so)."""
    changed = [
        key
        for key in RESTART_ONLY[:-1]
        if getattr(running.server, key) != getattr(loaded.server, key)
    ]
    if changed:
        log.warning(
            "reload: [server] %s changed; that applies at the next start", ", ".join(changed)
        )
    kept = {key: getattr(running.server, key) for key in RESTART_ONLY}
    return replace(loaded, server=replace(loaded.server, **kept))


# What to change when binding fails, by errno; the flag that changes it comes first.
_BIND_FIXES = {
    errno.EADDRINUSE: (
        "address already in use",
        "another server holds this port: stop it, or choose another port with --port",
    ),
    errno.EADDRNOTAVAIL: (
        "address not available",
        "it is not an address of this machine: choose one of its own with --address",
    ),
    errno.EACCES: (
        "permission denied",
        "ports below 1024 need privileges: choose a higher one with --port",
    ),
}


def listen(config: Config) -> list[socket.socket]:
    """Bind the configured address (port 0 picks a free one) and say so in the log.

    Raises ListenError, one line saying why and what to change, instead of the OSError."""
    host = config.server.address
    shown = f"[{host}]" if ":" in host else host
    try:
        sockets = bind_sockets(config.server.port, host)
    except socket.gaierror as error:
        raise ListenError(
            f"cannot listen on {shown}:{config.server.port}: {error.strerror}: "
            f"choose an address this machine has with --address"
        ) from None
    except OSError as error:
        reason, fix = _BIND_FIXES.get(
            error.errno or 0, (error.strerror or str(error), "check --address and --port")
        )
        raise ListenError(
            f"cannot listen on {shown}:{config.server.port}: {reason}; {fix}"
        ) from None
    scheme = "https" if config.server.tls is not None else "http"
    routes = ", ".join(f"{r.prefix} -> {r.integration}" for r in config.routes) or "none"
    log.info(
        "mediaproxy listening on %s://%s:%d (config %s; routes: %s; event loop %s)",
        scheme,
        shown,
        sockets[0].getsockname()[1],
        config.path,
        routes,
        eventloop.chosen(config.server.event_loop),
    )
    return sockets


def start(
    config: Config, sockets: list[socket.socket] | None = None, table: SharedTable | None = None
) -> RunningServer:
    """Serve on ``sockets`` (a worker's share of the parent's), or on newly bound ones;
    ``table``: the counters shared with the other workers, if any."""
    gateway = make_gateway(config, table)
    # Tornado's default would be 100 MB per request body; uploads stream, so no ceiling here.
    server = GatewayServer(
        gateway.application,
        max_body_size=MAX_INT64,
        header_timeout_s=config.server.header_timeout_s,
        idle_timeout_s=config.limits.idle_timeout_s,
        max_header_bytes=config.server.max_header_bytes,
        max_client_connections=config.server.max_client_connections,
        ssl_options=config.server.tls,
    )
    if sockets is None:
        sockets = listen(config)
    server.add_sockets(sockets)
    return RunningServer(gateway, server, sockets)


def reload_from(running: RunningServer, read_config: Callable[[], Config]) -> None:
    """Read the config again and serve new requests with it; an invalid one changes nothing."""
    try:
        config = read_config()
    except ConfigError as error:
        log.error("reload refused, the running config stays: %s", error)
        return
    running.reload(config)
    log.info(
        "config reloaded from %s (routes: %s); running streams finish on the old one",
        config.path,
        ", ".join(route.prefix for route in config.routes) or "none",
    )


def _reopen_access_log(running: RunningServer) -> None:
    if running.gateway.access_log is not None:
        running.gateway.access_log.reopen()


async def serve(
    config: Config,
    sockets: list[socket.socket] | None = None,
    table: SharedTable | None = None,
    read_config: Callable[[], Config] | None = None,
) -> None:
    """Run until a signal to stop, then drain. SIGTERM and SIGINT drain, refusing requests
    on open connections; SIGQUIT drains serving them (a worker being replaced); SIGHUP
    reloads the config with ``read_config`` (None: a worker, whose parent reloads by
    replacing it); SIGUSR1 reopens the access log."""
    running = start(config, sockets, table)
    stop = asyncio.Event()
    graceful = False

    def retire() -> None:
        nonlocal graceful
        graceful = True
        stop.set()

    loop = asyncio.get_running_loop()
    meanings: dict[signal.Signals, Callable[[], None]] = {
        signal.SIGTERM: stop.set,
        signal.SIGINT: stop.set,
        signal.SIGQUIT: retire,
        signal.SIGHUP: (
            (lambda: reload_from(running, read_config)) if read_config is not None else lambda: None
        ),
        signal.SIGUSR1: lambda: _reopen_access_log(running),
    }
    for signum, act in meanings.items():
        loop.add_signal_handler(signum, act)
    # A worker process starts with these blocked (mediaproxy.server.workers): none was lost.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, meanings)
    await stop.wait()
    log.info(
        "mediaproxy %s: %d streams running, grace %.0f s",
        "replaced, finishing" if graceful else "stopping",
        len(running.gateway.active),
        running.gateway.config.server.shutdown_grace_s,
    )
    await running.shutdown(graceful)
    log.info("mediaproxy stopped")
