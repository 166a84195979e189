"""Plan arithmetic on a given clock: GCRA admissions and calendar quota periods."""

from __future__ import annotations

import calendar

import pytest

from mediaproxy.streaming.usage import (
    Rate,
    gcra,
    http_date,
    period_end_s,
    period_number,
    retry_after,
)


def run(rate: Rate, times: list[float]) -> list[float]:
    """The wait each request is told (0: admitted), one request at each time."""
    tat, waits = 0.0, []
    for now in times:
        tat, wait = gcra(rate, tat, now)
        waits.append(round(wait, 6))
    return waits


@pytest.mark.parametrize(
    "rate, times, waits",
    [
        (Rate(1, 1), [10, 10, 10.5, 11], [0, 1, 0.5, 0]),
        (Rate(10, 5), [0] * 6, [0, 0, 0, 0, 0, 0.1]),
        (Rate(10, 5), [0] * 5 + [0.1, 0.1], [0, 0, 0, 0, 0, 0, 0.1]),
        (Rate(2, 3), [0, 0, 0, 0, 100, 100, 100, 100], [0, 0, 0, 0.5, 0, 0, 0, 0.5]),
    ],
)
def test_gcra_admits_a_burst_then_the_rate(
    rate: Rate, times: list[float], waits: list[float]
) -> None:
    assert run(rate, times) == waits


def test_a_refused_request_costs_nothing() -> None:
    rate = Rate(1, 1)
    waits = run(rate, [0] + [0.1 * i for i in range(1, 10)] + [1.0])
    assert waits[-1] == 0 and all(waits[1:-1])


def at(*moment: int) -> float:
    return float(calendar.timegm((*moment, 0, 0, 0)[:6]))


@pytest.mark.parametrize(
    "period, now, end",
    [
        ("day", at(2026, 12, 3, 9, 15, 0), at(2026, 12, 4, 0, 0, 0)),
        ("day", at(2026, 12, 31, 23, 59, 59), at(2027, 1, 1, 0, 0, 0)),
        ("month", at(2026, 12, 3, 9, 15, 0), at(2027, 1, 1, 0, 0, 0)),
        ("month", at(2026, 2, 28, 23, 0, 0), at(2026, 3, 1, 0, 0, 0)),
        ("month", at(2026, 1, 1, 0, 0, 0), at(2026, 2, 1, 0, 0, 0)),
    ],
)
def test_a_period_ends_at_the_next_utc_midnight_or_month(
    period: str, now: float, end: float
) -> None:
    assert period_end_s(period, now) == end
    assert period_number(period, end - 1) == period_number(period, now)
    assert period_number(period, end) == period_number(period, now) + 1


@pytest.mark.parametrize("wait, header", [(0.001, "1"), (1.0, "1"), (1.2, "2"), (0, "1")])
def test_retry_after_rounds_up_to_whole_seconds(wait: float, header: str) -> None:
    assert retry_after(wait) == header


def test_the_reset_time_is_an_imf_fixdate() -> None:
    assert http_date(at(2026, 12, 4, 0, 0, 0)) == "Fri, 04 Dec 2026 00:00:00 GMT"
