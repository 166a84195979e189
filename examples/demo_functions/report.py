"""A streamed NDJSON report: one JSON line per month of the sample orders database.

A plain *sync* generator doing blocking SQLite reads: mediaproxy advances it on its function
thread pool, never on the event loop, and closes it (running ``finally``) if the client leaves.
"""

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATABASE = Path(__file__).resolve().parents[2] / "sample_media" / "data" / "orders.sqlite"

QUERY = """
SELECT substr(ordered_at, 1, 7) AS month, currency, count(*) AS orders,
       sum(total_cents) AS total_cents,
       sum(status IN ('cancelled', 'refunded')) AS cancelled_or_refunded
FROM orders GROUP BY month, currency ORDER BY month, currency
"""


def monthly(event: dict[str, Any], context: Any) -> Iterator[Any]:
    yield {"statusCode": 200, "headers": {"Content-Type": "application/x-ndjson"}}
    connection = sqlite3.connect(f"file:{DATABASE}?mode=ro", uri=True)
    try:
        cursor = connection.execute(QUERY)
        columns = [c[0] for c in cursor.description]
        for row in cursor:
            yield json.dumps(dict(zip(columns, row)), ensure_ascii=False) + "\n"
    finally:
        connection.close()
