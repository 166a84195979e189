"""The arithmetic of usage plans, on an injected clock: a request rate per key and calendar
quotas of bytes. No storage here: the local table and the Redis scripts keep the numbers and
apply these same rules (the Redis scripts restate them in Lua; the unit tests pin both).

Rate: GCRA, the generic cell rate algorithm (ATM's, and redis-cell's). One number per key, the
theoretical arrival time (TAT): when the next request would be due were requests spaced evenly
at ``1 / requests_per_second``. A request at ``now`` is admitted if it is no earlier than
``TAT - (burst - 1) * interval``, and then moves TAT one interval on; so after a quiet period
``burst`` requests pass at once, and then one per interval. The refused learn exactly when
they would pass (Retry-After). It is a token bucket of size ``burst`` refilled at the rate,
stored as one timestamp instead of a count and a time.

Quotas: bytes per key per UTC calendar day or month, as API Gateway's usage plans count them;
a period is numbered (days or months since the epoch) so a counter carries its period and
starts again at zero in the next one.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from email.utils import formatdate

PERIODS = ("day", "month")
_DAY_S = 86400


@dataclass(frozen=True)
class Quota:
    """At most ``limit_bytes`` per key in each calendar ``period``."""

    period: str
    limit_bytes: int


@dataclass(frozen=True)
class Refusal:
    """Why a key's request is refused: ``reason`` is "rate", a quota's period or "streams";
    ``wait_s`` is how long until it would pass (0 when nobody can tell: a stream cap)."""

    reason: str
    wait_s: float


@dataclass(frozen=True)
class Rate:
    """``per_second`` requests a second on average, ``burst`` of them at once."""

    per_second: float
    burst: int

    @property
    def interval_s(self) -> float:
        return 1.0 / self.per_second

    @property
    def tolerance_s(self) -> float:
        return self.interval_s * (self.burst - 1)


def gcra(rate: Rate, tat_s: float, now_s: float) -> tuple[float, float]:
    """One request at ``now_s`` against the stored ``tat_s`` (0 for a new key).

    Returns ``(new_tat_s, retry_after_s)``: admitted when ``retry_after_s`` is 0 (store the new
    TAT); refused otherwise, the TAT unchanged, and it would pass ``retry_after_s`` later.
    """
    tat = max(tat_s, now_s)
    allowed_from = tat - rate.tolerance_s
    if now_s < allowed_from:
        return tat_s, allowed_from - now_s
    return tat + rate.interval_s, 0.0


def period_number(period: str, now_s: float) -> int:
    """Which day or month (UTC) ``now_s`` falls in, counted from the epoch."""
    if period == "day":
        return int(now_s // _DAY_S)
    moment = _utc(now_s)
    return (moment.tm_year - 1970) * 12 + moment.tm_mon - 1


def period_end_s(period: str, now_s: float) -> float:
    """When the period holding ``now_s`` ends: the next UTC midnight, or first of the month."""
    if period == "day":
        return (period_number("day", now_s) + 1) * _DAY_S
    moment = _utc(now_s)
    year, month = (
        (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
    )
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def _utc(now_s: float) -> time.struct_time:
    return time.gmtime(now_s)


def retry_after(wait_s: float) -> str:
    """Retry-After in whole seconds (RFC 9110 section 10.2.3: delay-seconds), rounded up so a
    client that obeys it is admitted, and never 0."""
    return str(max(1, math.ceil(wait_s)))


def http_date(moment_s: float) -> str:
    """An IMF-fixdate (RFC 9110 section 5.6.7), for the quota's reset time."""
    return formatdate(moment_s, usegmt=True)
