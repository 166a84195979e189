"""Admission: what happens between reading a request's headers and starting its integration.

In this order, each refusal a short status and no work done:

1. access (401 no credentials, 403 refused): an anonymous client learns nothing else, not
   even whether the route is busy or its upload too large;
2. the declared upload size (413 when Content-Length exceeds ``max_upload_bytes``); a chunked
   upload is counted as it arrives instead (``upload_allows``);
3. a stream slot (503 with Retry-After when the gateway or the route runs
   ``max_concurrent_streams`` already);
4. the usage plan of the API key that admitted it, if any (429: ``server.usage``), which the
   handler awaits: it may ask Redis.

The method is the integration's to judge (it knows what it serves), so it comes after these:
a POST to a file route past the upload limit is a 413, within it a 405.

A slot is held from admission until the handler's ``on_finish``, which Tornado runs on every
path out of a request (complete, cut, client gone, refused), and released exactly once.
Limits only ever refuse new requests: nothing here touches a stream already admitted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from tornado.httputil import HTTPHeaders

from mediaproxy.access_control import AccessPolicy
from mediaproxy.config import Route
from mediaproxy.errors import PayloadTooLarge, ServiceUnavailable
from mediaproxy.http import signing
from mediaproxy.server.shared_table import SharedTable, TableFull
from mediaproxy.server.usage import PlanGuard, PlanKey

# Streams last minutes: a client told to come back at once would only add load. Five seconds
# is long enough for a short stream to end and short enough for a player's retry to feel live.
RETRY_AFTER_S = 5


class Slot:
    """One admitted stream's place in the counts; ``release`` is idempotent."""

    def __init__(self, table: SharedTable, names: tuple[str, ...]) -> None:
        self._table = table
        self._names: tuple[str, ...] | None = names

    def release(self) -> None:
        if self._names is not None:
            self._table.release(self._names)
            self._names = None


TOTAL = "streams"


def route_name(prefix: str) -> str:
    """The shared table's name for a route's running streams."""
    return f"streams {prefix}"


class StreamSlots:
    """Running streams counted in all and per route prefix, against ``max_concurrent_streams``.

    The counts live in the instance's ``SharedTable``, so the caps hold for every worker
    process together, not for each.
    """

    def __init__(self, total_cap: int, table: SharedTable) -> None:
        self.total_cap = total_cap  # 0: no cap
        self.table = table
        self.closed = False

    def close(self) -> None:
        """Shutdown began: streams running go on, and no new one is admitted.

        A request on a connection kept alive from before gets a 503 that closes it, so the
        client asks again on a new connection, which reaches an instance still accepting;
        admitted, it would hold the drain and be cut at its deadline.
        """
        self.closed = True

    def acquire(self, prefix: str, route_cap: int) -> Slot:
        """A slot on route ``prefix`` (cap ``route_cap``, 0: none), or ServiceUnavailable."""
        if self.closed:
            raise ServiceUnavailable(
                "shutting down", headers={"Retry-After": "1", "Connection": "close"}
            )
        caps = ((TOTAL, self.total_cap), (route_name(prefix), route_cap))
        try:
            refused = self.table.acquire(caps)
        except TableFull as error:
            raise ServiceUnavailable(str(error)) from error
        if refused == 0:
            raise self._busy(f"gateway runs {self.total_cap} streams (its cap)")
        if refused == 1:
            raise self._busy(f"route {prefix} runs {route_cap} streams (its cap)")
        return Slot(self.table, tuple(name for name, _ in caps))

    @property
    def total(self) -> int:
        """Streams running on every worker of this instance."""
        return self.table.running(TOTAL)

    @staticmethod
    def _busy(detail: str) -> ServiceUnavailable:
        return ServiceUnavailable(detail, headers={"Retry-After": str(RETRY_AFTER_S)})


class Admission:
    """The admission step for one route."""

    def __init__(self, route: Route, slots: StreamSlots, plans: PlanGuard | None = None) -> None:
        self.route = route
        self.policy = AccessPolicy(route.access)
        self._slots = slots
        self.plans = plans
        self._max_upload_bytes = route.limits.max_upload_bytes

    def admit(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        declared_bytes: int | None,
    ) -> tuple[Slot, PlanKey | None]:
        """A slot for this request (``path`` normalised, ``declared_bytes`` its body's
        Content-Length) and the plan its key is on, if any; or the MediaproxyError that
        refuses it."""
        key = self.policy.check(method, path, query, headers, time.time())
        if declared_bytes is not None and not self.upload_allows(declared_bytes):
            raise PayloadTooLarge(f"Content-Length {declared_bytes} > {self._max_upload_bytes}")
        slot = self._slots.acquire(self.route.prefix, self.route.limits.max_concurrent_streams)
        return slot, None if self.plans is None else self.plans.plan_for(key)

    def upload_allows(self, body_bytes: int) -> bool:
        """Whether a request body of ``body_bytes`` is within the route's upload limit."""
        return not 0 < self._max_upload_bytes < body_bytes

    def forwarded_headers(self, headers: HTTPHeaders) -> HTTPHeaders:
        """The headers the integration sees: without the route's API key header, unless the
        route forwards it. Like the signing parameters, it is the gateway's credential."""
        access = self.route.access
        name = access.api_key_header
        if not access.api_keys or access.forward_api_key or name not in headers:
            return headers
        kept = headers.copy()
        del kept[name]
        return kept

    def forwarded_query(self, query: str) -> str:
        """The query the integration sees: on a signing route, without our two parameters.

        An origin behind a proxied route has no use for them, and they stay out of its logs.
        """
        if self.route.access.signing_secret is None:
            return query
        try:
            return signing.split_query(query)[0]
        except signing.SignatureError:
            return query  # duplicated parameters: admitted by an API key, passed on untouched
