"""CSV exports: a configured SQL query, its parameters bound from the query string, streamed.

The client's input reaches the database only as bound values (``mediaproxy.http.params`` types
them first); the SQL text is the route's own. Rows are fetched and formatted in batches on the
export thread pool, one batch at a time: the next batch is fetched only after the last one was
sent, so a slow client holds one batch of memory and the database cursor simply waits.

Format (RFC 4180): a header row of column names, ``,`` between fields, ``"`` around fields
holding a comma, a quote or a line break (quotes doubled inside), CRLF after every record
including the last, UTF-8 without a byte-order mark. NULL and the empty string are both an
empty field. Values are written as the database's text for them; a route with
``escape_formulas`` wraps its rows in ``FormulaEscapedRows`` (OWASP's CSV-injection advice).

Failure: a query that fails before its first batch is a 502 (the detail is logged, never
sent); one that fails later aborts the response, so the client sees a cut download, never a
short file that looks complete. A timer or the client leaving cancels the export: a running
SQLite step is interrupted, a running PostgreSQL fetch is cancelled server-side, and the
cursor and connection are closed right after.

Databases:

* SQLite (the embedded default): a fresh connection per export, opened read-only
  (``mode=ro`` on the file's escaped ``file:`` URI), placeholders ``:name``.
* PostgreSQL (psycopg 3, the ``postgres`` extra): a fresh connection per export in a READ ONLY
  transaction and a server-side cursor (``DECLARE ... CURSOR``), so the server streams and the
  parameters are truly bound (``COPY (query) TO STDOUT`` cannot take bound parameters). Every
  column is loaded as PostgreSQL's own text, so values read as ``psql`` shows them.
  Placeholders ``%(name)s``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from mediaproxy.config import CsvExportSettings, Route
from mediaproxy.errors import MethodNotAllowed, RequestError, UpstreamError
from mediaproxy.http.disposition import content_disposition
from mediaproxy.http.params import InvalidParameter, Value, parse_query
from mediaproxy.integrations.base import Exchange, Integration
from mediaproxy.threads import LazyPool, SerialSteps

log = logging.getLogger("mediaproxy.csv_export")

CONTENT_TYPE = "text/csv; charset=utf-8; header=present"  # RFC 4180 §3
# The first batch is small so the first byte leaves quickly; batches then double up to the
# route's batch_rows.
FIRST_BATCH_ROWS = 200
# Each export thread runs one batch at a time for one export; exports beyond this many wait
# for a free thread between batches (a batch is milliseconds).
EXPORT_THREADS = 4

_export_pool = LazyPool(EXPORT_THREADS, "mediaproxy-export")


class QueryFailed(Exception):
    """The database refused or broke off the query; the message is for the log."""


class RowSource(ABC):
    """One export's cursor. Used from one pool thread at a time, except ``interrupt``."""

    @abstractmethod
    def execute(self, query: str, params: Mapping[str, Value]) -> list[str]:
        """Run the query; return the column names."""

    @abstractmethod
    def fetch(self, count: int) -> Sequence[Sequence[Any]]:
        """Up to ``count`` rows; fewer only at the end."""

    @abstractmethod
    def interrupt(self) -> None:
        """Make a running ``execute``/``fetch`` fail soon. Called from the event loop."""

    @abstractmethod
    def close(self) -> None:
        """Release the cursor and the connection."""


# How often a running SQLite statement checks whether its export was interrupted, in virtual
# machine instructions: a few milliseconds apart, for a cost too small to measure.
SQLITE_CHECK_INSTRUCTIONS = 100_000


class SqliteRows(RowSource):
    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._connection: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None
        self._interrupted = False

    def execute(self, query: str, params: Mapping[str, Value]) -> list[str]:
        try:
            # check_same_thread=False: SerialSteps moves the connection between pool threads,
            # but never uses it from two at once.
            connection = self._connection = sqlite3.connect(
                self._uri, uri=True, check_same_thread=False)
            # sqlite3_interrupt is lost when it lands before the statement starts (while
            # connecting, say), and the statement then runs on unbounded; this flag stays set.
            connection.set_progress_handler(lambda: self._interrupted,
                                            SQLITE_CHECK_INSTRUCTIONS)
            self._cursor = connection.execute(
                query, {name: _sqlite_value(value) for name, value in params.items()})
        except sqlite3.Error as error:
            raise QueryFailed(f"SQLite: {error}") from error
        return [column[0] for column in self._cursor.description or ()]

    def fetch(self, count: int) -> Sequence[Sequence[Any]]:
        assert self._cursor is not None
        try:
            return self._cursor.fetchmany(count)
        except sqlite3.Error as error:
            raise QueryFailed(f"SQLite: {error}") from error

    def interrupt(self) -> None:
        self._interrupted = True
        if self._connection is not None:
            self._connection.interrupt()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()  # also finalizes the cursor's statement


def _sqlite_value(value: Value) -> Value:
    """SQLite has no date types: bind the ISO 8601 text that compares in time order."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
            return value.isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _import_psycopg() -> Any:
    """psycopg, imported when the first PostgreSQL export runs, not with this module: it
    costs every process about 11 MiB, which a gateway exporting nothing from PostgreSQL
    should not pay (measured: 200 slow file downloads peaked 11 MiB higher with it)."""
    try:
        import psycopg
        import psycopg.types.string
    except ImportError:  # the optional `postgres` extra
        raise QueryFailed("psycopg is not installed (pip install 'mediaproxy[postgres]')") from None
    return psycopg


class PostgresRows(RowSource):
    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: Any = None
        self._cursor: Any = None
        self._psycopg: Any = None
        # A cancel request reaches only a query already running: one that lands earlier
        # (while connecting, between batches) is kept here and honoured before the next.
        self._interrupted = False

    def execute(self, query: str, params: Mapping[str, Value]) -> list[str]:
        psycopg = self._psycopg = _import_psycopg()
        TextLoader = psycopg.types.string.TextLoader
        try:
            connection = self._connection = psycopg.connect(self._url)
            connection.read_only = True
            for info in psycopg.postgres.types:
                # PostgreSQL's own text for every built-in type (and arrays): no Python
                # round trip that would print True for t or 2024-01-01 00:00:00+00:00.
                connection.adapters.register_loader(info.oid, TextLoader)
                if info.array_oid:
                    connection.adapters.register_loader(info.array_oid, TextLoader)
            # A named cursor is a server-side one: DECLARE, then FETCH FORWARD per batch.
            self._raise_if_interrupted()
            self._cursor = connection.cursor(name="mediaproxy_export")
            self._cursor.execute(query, dict(params))
        except psycopg.Error as error:
            raise QueryFailed(f"PostgreSQL: {error}") from error
        return [column.name for column in self._cursor.description or ()]

    def fetch(self, count: int) -> Sequence[Sequence[Any]]:
        self._raise_if_interrupted()
        try:
            rows: Sequence[Sequence[Any]] = self._cursor.fetchmany(count)
        except self._psycopg.Error as error:
            raise QueryFailed(f"PostgreSQL: {error}") from error
        return rows

    def _raise_if_interrupted(self) -> None:
        if self._interrupted:
            raise QueryFailed("PostgreSQL: interrupted")

    def interrupt(self) -> None:
        self._interrupted = True
        connection = self._connection
        if connection is not None:
            # A cancel request is a network round trip: not on the event loop.
            threading.Thread(target=_cancel_quietly, args=(connection,), daemon=True,
                             name="mediaproxy-pg-cancel").start()

    def close(self) -> None:
        try:
            if self._cursor is not None:
                self._cursor.close()
        except Exception as error:  # psycopg.Error: a broken connection cannot CLOSE
            log.debug("closing the PostgreSQL cursor: %s", error)
        finally:
            if self._connection is not None:
                self._connection.close()  # rolls back the read-only transaction


def _cancel_quietly(connection: Any) -> None:
    try:
        connection.cancel_safe(timeout=5.0)
    except Exception as error:  # the connection may be closing already
        log.debug("PostgreSQL cancel request failed: %s", error)


# OWASP "CSV Injection": a spreadsheet runs a cell that starts with one of these as a formula
# (tab and CR because some strip them and read what follows).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A plain number, as either database writes one, cannot be a formula: "-3" stays a number.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def escape_formula(value: object) -> object:
    """``value``, with a single quote before it if a spreadsheet would run it as a formula."""
    if (isinstance(value, str) and value.startswith(FORMULA_STARTS)
            and not _PLAIN_NUMBER.fullmatch(value)):
        return "'" + value
    return value


class FormulaEscapedRows(RowSource):
    """Another source's rows with every formula-like text cell escaped (``escape_formula``).

    It works on the cells' text, so both databases give the same result whatever the column
    types: PostgreSQL's values all arrive as text.
    """

    def __init__(self, source: RowSource) -> None:
        self._source = source

    def execute(self, query: str, params: Mapping[str, Value]) -> list[str]:
        return self._source.execute(query, params)

    def fetch(self, count: int) -> Sequence[Sequence[Any]]:
        return [[escape_formula(value) for value in row] for row in self._source.fetch(count)]

    def interrupt(self) -> None:
        self._source.interrupt()

    def close(self) -> None:
        self._source.close()


class CsvBatches:
    """Rows as CSV bytes, one batch per call, each call a step on the export pool."""

    def __init__(self, source: RowSource, batch_rows: int) -> None:
        self._source = source
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")
        self._next_rows = min(FIRST_BATCH_ROWS, batch_rows)
        self._batch_rows = batch_rows
        self._exhausted = False
        self.rows = 0

    def first(self, query: str, params: Mapping[str, Value]) -> bytes:
        """Run the query; the header row and the first batch."""
        self._writer.writerow(self._source.execute(query, params))
        return self._batch()

    def next(self) -> bytes:
        """The next batch; b"" once every row has been sent."""
        return b"" if self._exhausted else self._batch()

    def _batch(self) -> bytes:
        rows = self._source.fetch(self._next_rows)
        self._exhausted = len(rows) < self._next_rows
        self._next_rows = min(self._next_rows * 2, self._batch_rows)
        self.rows += len(rows)
        self._writer.writerows(rows)
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode("utf-8")


class CsvExportIntegration(Integration):
    def __init__(self, route: Route) -> None:
        super().__init__(route)
        settings: CsvExportSettings = route.settings
        self.settings = settings

    def _source(self) -> RowSource:
        source: RowSource
        if self.settings.is_postgres:
            source = PostgresRows(self.settings.database)
        else:
            source = SqliteRows(self.settings.sqlite_uri)
        return FormulaEscapedRows(source) if self.settings.escape_formulas else source

    async def respond(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(request.method, ("GET", "HEAD"))
        if request.path not in ("", "/"):
            raise RequestError(f"no export at {request.path!r}",
                               phrase="Bad Request: this export has no sub-paths")
        try:
            params = parse_query(request.query, self.settings.params)
        except InvalidParameter as error:
            raise RequestError(str(error), phrase=f"Bad Request: {error}") from None
        headers = [("Content-Type", CONTENT_TYPE),
                   ("Content-Disposition", content_disposition(self._filename(params))),
                   ("Cache-Control", "no-store"),
                   ("X-Content-Type-Options", "nosniff")]
        if request.method == "HEAD":
            exchange.start(200, headers)  # the headers a GET would get, without the query
            return
        source = self._source()
        batches = CsvBatches(source, self.settings.batch_rows)
        steps = SerialSteps(_export_pool.get())
        try:
            try:
                chunk = await steps.run(batches.first, self.settings.query, params)
            except QueryFailed as error:
                log.warning("export %s: query failed before the first row: %s",
                            self.route.prefix, error)
                raise UpstreamError(str(error),
                                    phrase="Bad Gateway: the export query failed") from None
            exchange.start(200, headers)
            while chunk:
                await exchange.send(chunk)
                try:
                    chunk = await steps.run(batches.next)
                except QueryFailed as error:
                    log.warning("export %s: query failed after %d rows: %s",
                                self.route.prefix, batches.rows, error)
                    raise UpstreamError(str(error)) from None
            await exchange.finish()
        finally:
            await steps.close(source.close, source.interrupt)

    def _filename(self, params: Mapping[str, Value]) -> str:
        today = datetime.now(timezone.utc).date().isoformat()
        values = {name: "" if value is None else str(value) for name, value in params.items()}
        return self.settings.filename.format_map({**values, "date": today})
