"""An export's SQLite statement stops when interrupted, however early the interrupt came."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from mediaproxy.integrations.csv_export import QueryFailed, SqliteRows

NEVER_ENDS = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s) "
              "SELECT count(*) FROM s")


def test_an_interrupt_before_the_statement_starts_still_stops_it(tmp_path: Path) -> None:
    database = tmp_path / "empty.sqlite"
    sqlite3.connect(database).close()
    rows = SqliteRows(database.as_uri())
    rows.interrupt()  # the export was cancelled while its thread was still connecting
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            rows.execute(NEVER_ENDS, {})
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    stuck = worker.is_alive()
    if stuck and rows._connection is not None:
        rows._connection.interrupt()  # free the thread the old behaviour would have left
    assert not stuck, "the statement ran on after the interrupt"
    assert len(outcome) == 1 and isinstance(outcome[0], QueryFailed)
    rows.close()
