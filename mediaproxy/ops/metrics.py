"""Prometheus metrics per route and integration, counted once per exchange.

What a streaming gateway costs is data transfer and duration, so those are the figures:
requests by status, bytes each way, time to first byte, stream duration, streams running now,
and how streams ended (``Termination``). Nothing is counted per chunk: the handler calls
``observe`` once, in ``on_finish``, with the same record the access log writes.

Routes that take API keys or signed URLs are counted under ``RESTRICTED`` for both labels when
``/metrics`` is public (no admin key configured), so a scrape that anybody may make names no
private prefix yet its totals still add up; behind an admin key every route has its own labels.

Several worker processes: prometheus_client's multiprocess mode. Each process keeps its
values in memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``; whichever worker a scrape
reaches reads every process's files, so ``/metrics`` is the sum over the whole server (active
streams too: ``livesum`` drops a process's share when it exits). prometheus_client chooses its
storage when it is first imported, so the supervisor sets the variable before importing this
module (``mediaproxy.server.workers``); ``Metrics`` refuses a mixed state rather than undercount.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics import MetricWrapperBase

from mediaproxy.config import Route
from mediaproxy.integrations.base import CacheReport
from mediaproxy.ops.access_log import ExchangeRecord
from mediaproxy.ops.metrics_dir import MULTIPROCESS_DIR_ENV, multiprocess_dir

# What generate_latest writes, named the way every Prometheus version reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LABELS = ("route", "integration")
RESTRICTED = "(restricted)"  # no route prefix can be this: prefixes start with "/"
# From a page-cached file on loopback (~1 ms) to an origin that takes its time.
TTFB_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# From an API answer to the hour a route may allow; the default cap is 900 s (API Gateway).
DURATION_BUCKETS_S = (
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
)


# The *_created series double a scrape for a figure nobody graphs (multiprocess mode has none).
disable_created_metrics()  # type: ignore[no-untyped-call]


M = TypeVar("M", bound=MetricWrapperBase)


class Metrics:
    """The gateway's metrics; one instance per server process."""

    def __init__(self, routes: tuple[Route, ...] = (), *, reveal_restricted: bool = False) -> None:
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess != bool(getattr(values.ValueClass, "_multiprocess", False)):
            raise RuntimeError(
                f"{MULTIPROCESS_DIR_ENV} must be set (or unset) before "
                "prometheus_client is first imported"
            )
        # Our own registry, not the global one: every server in a process (tests start
        # many) counts from zero.
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "mediaproxy_requests",
            "Exchanges answered, by status.",
            LABELS + ("status",),
            registry=registry,
        )
        self.sent_bytes = Counter(
            "mediaproxy_sent_bytes", "Body bytes sent to clients.", LABELS, registry=registry
        )
        self.received_bytes = Counter(
            "mediaproxy_received_bytes",
            "Request body bytes received from clients.",
            LABELS,
            registry=registry,
        )
        self.ttfb = Histogram(
            "mediaproxy_ttfb_seconds",
            "Time from the request to the first body byte sent.",
            LABELS,
            buckets=TTFB_BUCKETS_S,
            registry=registry,
        )
        self.duration = Histogram(
            "mediaproxy_stream_duration_seconds",
            "Time from the request to the end of the exchange.",
            LABELS,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.active = Gauge(
            "mediaproxy_active_streams",
            "Exchanges running now.",
            LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.terminations = Counter(
            "mediaproxy_terminations",
            "How exchanges ended (complete, client_closed, ...).",
            LABELS + ("reason",),
            registry=registry,
        )
        self.plan_refusals = Counter(
            "mediaproxy_plan_refusals",
            "Requests refused (or streams cut) by a usage plan, by "
            "reason: rate, day, month, streams.",
            ("plan", "reason"),
            registry=registry,
        )
        self.shared_state_errors = Counter(
            "mediaproxy_shared_state_errors",
            "Calls to the shared state (Redis) that failed.",
            registry=registry,
        )
        self.shared_state_up = Gauge(
            "mediaproxy_shared_state_up",
            "1 while the shared state answers, 0 during an outage.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.shared_state_up.set(1)
        self.cache_responses = Counter(
            "mediaproxy_cache_responses",
            "Exchanges on cached routes, by X-Cache result: HIT, MISS, REVALIDATED, BYPASS.",
            LABELS + ("result",),
            registry=registry,
        )
        self.cache_sent_bytes = Counter(
            "mediaproxy_cache_sent_bytes",
            "Body bytes sent on cached routes (not BYPASS), by where they came from: cache "
            "(stored slices) or origin (a fill as it arrived).",
            LABELS + ("source",),
            registry=registry,
        )
        self.cache_origin_bytes = Counter(
            "mediaproxy_cache_origin_bytes",
            "Body bytes the cache's fills read from the origin (however many clients took them).",
            LABELS,
            registry=registry,
        )
        self.cache_evictions = Counter(
            "mediaproxy_cache_evictions",
            "Slices evicted to keep the cache under cache_max_bytes.",
            LABELS,
            registry=registry,
        )
        self.cache_size = Gauge(
            "mediaproxy_cache_size_bytes",
            "Bytes on disk the cache holds (each process counts what it indexed).",
            LABELS,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._cache_seen: dict[str, tuple[int, int]] = {}  # prefix -> origin bytes, evictions
        self._children: dict[tuple[object, ...], MetricWrapperBase] = {}
        self._labels: dict[str, tuple[str, str]] = {}  # route prefix -> its label values
        self.use_routes(routes, reveal_restricted)

    def use_routes(self, routes: tuple[Route, ...], reveal_restricted: bool) -> None:
        """Label these routes (a reloaded config's too: the counts go on from where they were).

        A route gone from the config keeps its labels: its streams may still be running."""
        self._reveal_restricted = reveal_restricted
        self._labels.update({route.prefix: _labels(route, reveal_restricted) for route in routes})
        for labels in self._labels.values():  # a route nobody used yet shows zeros, not nothing
            for metric in (
                self.sent_bytes,
                self.received_bytes,
                self.ttfb,
                self.duration,
                self.active,
            ):
                self._child(metric, *labels)

    def _child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, bound once: binding costs three times the counting."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child  # type: ignore[return-value]  # stored by _child itself, for this M

    def _route_labels(self, prefix: str, integration: str) -> tuple[str, str]:
        return self._labels.get(prefix, (prefix, integration))

    def stream_started(self, route: Route) -> None:
        self._child(self.active, *self._route_labels(route.prefix, route.integration)).inc()

    def stream_ended(self, route: Route) -> None:
        self._child(self.active, *self._route_labels(route.prefix, route.integration)).dec()

    def observe(self, record: ExchangeRecord) -> None:
        """Count one finished exchange."""
        route = self._route_labels(record.route, record.integration)
        self._child(self.requests, *route, str(record.status)).inc()
        self._child(self.terminations, *route, record.termination.value).inc()
        if record.bytes_sent:
            self._child(self.sent_bytes, *route).inc(record.bytes_sent)
        if record.bytes_received:
            self._child(self.received_bytes, *route).inc(record.bytes_received)
        if record.ttfb_s is not None:
            self._child(self.ttfb, *route).observe(record.ttfb_s)
        self._child(self.duration, *route).observe(record.duration_s)
        if record.cache is not None:
            self._observe_cache(record.route, route, record.cache, record.bytes_sent)

    def _observe_cache(
        self, prefix: str, labels: tuple[str, str], cache: CacheReport, bytes_sent: int
    ) -> None:
        """One exchange's result and bytes, and the cache's totals as it ended: the size
        gauge, and its counters moved on by what changed since the last exchange."""
        self._child(self.cache_responses, *labels, cache.result).inc()
        if cache.result != "BYPASS":
            from_origin = max(0, bytes_sent - cache.bytes_from_cache)
            self._child(self.cache_sent_bytes, *labels, "cache").inc(cache.bytes_from_cache)
            self._child(self.cache_sent_bytes, *labels, "origin").inc(from_origin)
        self._child(self.cache_size, *labels).set(cache.size_bytes)
        seen_origin, seen_evictions = self._cache_seen.get(prefix, (0, 0))
        if cache.origin_bytes > seen_origin:
            self._child(self.cache_origin_bytes, *labels).inc(cache.origin_bytes - seen_origin)
        if cache.evictions > seen_evictions:
            self._child(self.cache_evictions, *labels).inc(cache.evictions - seen_evictions)
        self._cache_seen[prefix] = (
            max(seen_origin, cache.origin_bytes),
            max(seen_evictions, cache.evictions),
        )

    def plan_refused(self, plan: str, reason: str) -> None:
        # Plans hold API keys: a public scrape does not name them.
        label = plan if self._reveal_restricted else RESTRICTED
        self._child(self.plan_refusals, label, reason).inc()

    def shared_state_failed(self) -> None:
        self.shared_state_errors.inc()

    def shared_state_answers(self, up: bool) -> None:
        self.shared_state_up.set(1 if up else 0)

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's figures, or every process's summed."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def _labels(route: Route, reveal_restricted: bool) -> tuple[str, str]:
    if route.access.restricted and not reveal_restricted:
        return RESTRICTED, RESTRICTED
    return route.prefix, route.integration


def forget_process(pid: int) -> None:
    """A worker exited: its running streams no longer count (its counters still do)."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
