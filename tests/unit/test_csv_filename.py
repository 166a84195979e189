"""csv_export's download name: its template filled with the request's parameters."""

from __future__ import annotations

import pytest

from mediaproxy.integrations.csv_export import render_filename

TEMPLATE = "orders-since-{since}-{status}.csv"


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        (TEMPLATE, {"since": "2024-06-01", "status": "paid"}, "orders-since-2024-06-01-paid.csv"),
        # An absent optional parameter takes the separator before it along: two downloads of
        # one export with and without it get different names, neither with a dangling "-".
        (TEMPLATE, {"since": "2024-06-01", "status": None}, "orders-since-2024-06-01.csv"),
        ("orders_{status}.csv", {"status": None}, "orders.csv"),
        ("orders {status}.csv", {"status": None}, "orders.csv"),
        ("{status}-orders.csv", {"status": None}, "-orders.csv"),  # nothing before it to take
        ("report-{date}.csv", {}, "report-2026-12-03.csv"),
        ("n{count}.csv", {"count": 7}, "n7.csv"),
        ("{a}{b}.csv", {"a": None, "b": "x"}, "x.csv"),
    ],
)
def test_render_filename(template: str, values: dict[str, object], expected: str) -> None:
    assert render_filename(template, values, today="2026-12-03") == expected  # type: ignore[arg-type]
