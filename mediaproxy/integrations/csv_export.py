"""CSV exports: a configured SQL query, its parameters bound from the query string, streamed.

The client's input reaches the database only as typed values (``mediaproxy.http.params``
types them first); the SQL text is the route's own. Each export runs in a process of its own
(``export_processes``: forked from a fork server, so its CPU never holds the event loop's
GIL), which produces the CSV in batches (``CsvChunks``) and writes them to a socket the
gateway relays: the process blocks on that socket when the client is slow, so it holds one
batch of memory and the database simply waits.

Format (RFC 4180): a header row of column names, ``,`` between fields, ``"`` around fields
holding a comma, a quote or a line break (quotes doubled inside), CRLF after every record
including the last (or LF, the route's ``line_terminator``), UTF-8 without a byte-order mark.
Values are written as the database's text for them. What differs by database is in
docs/csv-exports.md: mainly, SQLite's NULL and empty string are both an empty field, while
PostgreSQL's COPY writes the empty string as ``""``. A route with ``escape_formulas`` follows
OWASP's CSV-injection advice: ``FormulaEscapedRows`` for SQLite, the same rule in SQL for
PostgreSQL (``formula_escaped_query``).

Failure: a query that fails before its first batch is a 502 (the detail is logged, never
sent); one that fails later aborts the response, so the client sees a cut download, never a
short file that looks complete. A timer, the client leaving or a shutdown closes the socket:
the process sends PostgreSQL a cancel request if it has one running and exits at once, which
ends a SQLite statement with it (and it is killed if it lingers).

Databases:

* SQLite (the embedded default): a fresh connection per export, opened read-only
  (``mode=ro`` on the file's escaped ``file:`` URI), placeholders ``:name``, truly bound;
  Python's csv module formats the rows.
* PostgreSQL (psycopg 3, the ``postgres`` extra): a fresh connection per export in a READ ONLY
  transaction, the query run as ``COPY (query) TO STDOUT (FORMAT csv, HEADER)`` so that the
  server writes the CSV and it passes through untouched but for line ends
  (``PostgresCopy``). Placeholders ``%(name)s``, filled client-side as literals by psycopg.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import operator
import os
import re
import select
import sqlite3
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import compress, repeat
from pathlib import Path
from typing import Any

from mediaproxy.config import Route, Table
from mediaproxy.errors import MethodNotAllowed, RequestError, UpstreamError
from mediaproxy.http.disposition import content_disposition
from mediaproxy.http.params import (
    InvalidParameter,
    ParamSpec,
    Value,
    parse_declaration,
    parse_query,
)
from mediaproxy.integrations.base import Exchange, Integration
from mediaproxy.integrations.export_processes import ExportProcess, ForkServer, QueryFailed
from mediaproxy.sql_statements import single_statement

log = logging.getLogger("mediaproxy.csv_export")

CONTENT_TYPE = "text/csv; charset=utf-8; header=present"  # RFC 4180 §3
# The first batch is small so the first byte leaves quickly; batches then double up to the
# route's batch_rows.
FIRST_BATCH_ROWS = 200

_fork_server = ForkServer()


@dataclass(frozen=True)
class CsvExportSettings:
    database: str  # an absolute SQLite file path, or a postgresql:// URL
    query: str  # placeholders in the database's own style: :name (SQLite), %(name)s (psycopg)
    params: Mapping[str, ParamSpec]
    filename: str  # may hold {date} and {name} of any declared parameter
    batch_rows: int
    # Off by default: it changes the data (a text cell "=x" arrives as "'=x"), which a program
    # reading the export would not expect; a route whose CSV goes to spreadsheets turns it on.
    escape_formulas: bool = False
    line_terminator: str = "\r\n"  # after every record: RFC 4180's CRLF, or "\n"
    # SQLite's: "default" (Python's csv module, the same bytes as ever) or "arrow" (ADBC and
    # Arrow's CSV writer for STRICT tables; the `arrow` extra).
    engine: str = "default"
    # The export process's niceness (added to the gateway's): on short cores the gateway's own
    # requests go first and bulk exports take what is left; 0 makes them equals.
    niceness: int = 10
    # How the kernel schedules the export process (SCHEDULERS): "idle" runs it only on CPU
    # time nothing else wants; "batch" shares the CPU by niceness but never preempts the
    # gateway when it wakes.
    scheduling: str = "batch"

    @property
    def is_postgres(self) -> bool:
        return self.database.startswith(POSTGRES_SCHEMES)

    @property
    def sqlite_uri(self) -> str:
        """The read-only URI of the SQLite file. ``as_uri`` escapes the path, so a '?' or '#'
        in a folder or file name cannot start the URI's query (and drop ``mode=ro``)."""
        return Path(self.database).as_uri() + "?mode=ro"


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Rows per batch once an export is under way (the first batches are smaller, for a quick first
# byte). The batch size barely changes the export's rate over a wide range (bench/RESULTS.md),
# so it is chosen for memory: one batch is what a slow client pins per export.
DEFAULT_BATCH_ROWS = 5000
LINE_TERMINATORS = {"crlf": "\r\n", "lf": "\n"}
ENGINES = ("default", "arrow")
# Linux's policies for CPU-bound work that nobody waits for interactively (sched(7)).
SCHEDULERS = {"idle": os.SCHED_IDLE, "batch": os.SCHED_BATCH}


def read_settings(table: Table) -> CsvExportSettings:
    database = table.string("database")
    if not database.startswith(POSTGRES_SCHEMES):
        path = (table.path.parent / database).resolve()
        if not path.is_file():
            raise table.error(
                "database", f"{path} is not an existing SQLite file (or give a postgresql:// URL)"
            )
        database = str(path)
    query = table.string("query")
    if database.startswith(POSTGRES_SCHEMES):
        try:
            query = single_statement(query)
        except ValueError as error:
            raise table.error("query", str(error)) from None
    params_table = table.table("params")
    params: dict[str, ParamSpec] = {}
    for name in params_table.names():
        try:
            params[name] = parse_declaration(name, params_table.string(name))
        except ValueError as error:
            raise params_table.error(name, str(error)) from None
    params_table.finish()
    filename = table.string("filename", "export-{date}.csv")
    allowed = {"date", *params}
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(filename) if name is not None}
    except ValueError as error:
        raise table.error("filename", f"not a valid template: {error}") from None
    if not fields <= allowed:
        raise table.error(
            "filename",
            f"unknown placeholder {{{sorted(fields - allowed)[0]}}}; "
            f"known: {', '.join('{' + n + '}' for n in sorted(allowed))}",
        )
    settings = CsvExportSettings(
        database=database,
        query=query,
        params=params,
        filename=filename,
        batch_rows=table.integer("batch_rows", DEFAULT_BATCH_ROWS, minimum=1, maximum=1_000_000),
        escape_formulas=table.boolean("escape_formulas", CsvExportSettings.escape_formulas),
        line_terminator=LINE_TERMINATORS[
            table.choice("line_terminator", tuple(LINE_TERMINATORS), "crlf")
        ],
        engine=table.choice("engine", ENGINES, "default"),
        niceness=table.integer("niceness", CsvExportSettings.niceness, minimum=0, maximum=19),
        scheduling=table.choice("scheduling", tuple(SCHEDULERS), CsvExportSettings.scheduling),
    )
    if settings.is_postgres and settings.engine != "default":
        raise table.error(
            "engine", "PostgreSQL writes its own CSV (COPY): only SQLite routes take an engine"
        )
    if not settings.is_postgres:
        _check_sqlite_query(table, settings)
    return settings


def _check_sqlite_query(table: Table, settings: CsvExportSettings) -> None:
    """Prepare the query once at start-up, so a typo is a ConfigError and not a 502 later."""
    try:
        connection = sqlite3.connect(settings.sqlite_uri, uri=True)
    except sqlite3.Error as error:
        raise table.error("database", f"cannot open {settings.database}: {error}") from None
    try:
        # EXPLAIN compiles the statement without running it; every declared name is bound.
        connection.execute("EXPLAIN " + settings.query, dict.fromkeys(settings.params))
    except (sqlite3.Error, sqlite3.Warning) as error:
        raise table.error("query", f"SQLite refuses it: {error}") from None
    finally:
        connection.close()


@dataclass(frozen=True)
class ExportJob:
    """What an export process needs: sent to it pickled, run by ``produce``."""

    database: str  # a SQLite file: URI, or a postgresql:// URL
    postgres: bool
    engine: str  # SQLite's: "default" or "arrow"
    niceness: int  # the export process's, added to the gateway's
    scheduling: str  # a SCHEDULERS key
    query: str
    params: Mapping[str, Value]
    batch_rows: int
    line_terminator: str
    escape_formulas: bool


def produce(job: ExportJob) -> tuple[CsvChunks, str, Mapping[str, Value]]:
    """In the export process: the job's CSV producer, and its query and parameters."""
    os.nice(job.niceness)
    os.sched_setscheduler(0, SCHEDULERS[job.scheduling], os.sched_param(0))
    chunks: CsvChunks
    if job.postgres:
        chunks = PostgresCopy(
            job.database, job.batch_rows, job.line_terminator, job.escape_formulas
        )
    elif job.engine == "arrow":
        chunks = ArrowCsv(job.database, job.batch_rows, job.line_terminator, job.escape_formulas)
    else:
        source: RowSource = SqliteRows(job.database)
        if job.escape_formulas:
            source = FormulaEscapedRows(source)
        chunks = SqliteCsv(source, job.batch_rows, job.line_terminator)
    return chunks, job.query, job.params


class RowSource(ABC):
    """One export's cursor, in its export process."""

    @abstractmethod
    def execute(self, query: str, params: Mapping[str, Value]) -> list[str]:
        """Run the query; return the column names."""

    @abstractmethod
    def fetch(self, count: int) -> Sequence[Sequence[Any]]:
        """Up to ``count`` rows; fewer only at the end."""

    @abstractmethod
    def interrupt(self) -> None:
        """Stop the database's work: the gateway has gone and the process exits next. Called
        from another thread than the one running the query."""

    @abstractmethod
    def close(self) -> None:
        """Release the cursor and the connection."""


class SqliteRows(RowSource):
    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._connection: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None

    def execute(self, query: str, params: Mapping[str, Value]) -> list[str]:
        try:
            connection = self._connection = sqlite3.connect(self._uri, uri=True)
            self._cursor = connection.execute(
                query, {name: _sqlite_value(value) for name, value in params.items()}
            )
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
        """Nothing to do: the export process exits right after, and the statement with it."""

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


# OWASP "CSV Injection": a spreadsheet runs a cell that starts with one of these as a formula
# (tab and CR because some strip them and read what follows).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A plain number, as either database writes one, cannot be a formula: "-3" stays a number.
PLAIN_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_PLAIN_NUMBER = re.compile(PLAIN_NUMBER)


def escape_formula(value: object) -> object:
    """``value``, with a single quote before it if a spreadsheet would run it as a formula."""
    if (
        isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


class FormulaEscapedRows(RowSource):
    """Another source's rows with every formula-like text cell escaped (``escape_formula``)."""

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


def _import_psycopg() -> Any:
    """psycopg, imported when the first PostgreSQL export runs, not with this module: it
    costs every process memory that a gateway exporting nothing from PostgreSQL should not
    pay (bench/RESULTS.md, "Figures behind code comments")."""
    try:
        import psycopg
    except ImportError:  # the optional `postgres` extra
        raise QueryFailed("psycopg is not installed (pip install 'mediaproxy[postgres]')") from None
    return psycopg


class CsvChunks(ABC):
    """One export's CSV bytes, a batch per call, in its export process."""

    rows = 0  # data rows produced so far

    @abstractmethod
    def first(self, query: str, params: Mapping[str, Value]) -> bytes:
        """Run the query; the header row and the first batch. QueryFailed if the query fails
        before its first batch is whole, so that nothing has been sent."""

    @abstractmethod
    def next(self) -> bytes:
        """The next batch; b"" once every row has been sent."""

    @abstractmethod
    def interrupt(self) -> None:
        """Stop the database's work: the gateway has gone and the process exits next. Called
        from another thread than the one running the query."""

    @abstractmethod
    def close(self) -> None:
        """Release the cursor and the connection."""


class SqliteCsv(CsvChunks):
    """SQLite rows formatted by Python's csv module, batch by batch.

    Rows are written without their line ends, by a writer whose line terminator is empty: the
    csv module looks each character of each field up in the terminator, so an empty one is its
    cheapest. That writer quotes exactly as the route's would, but for a field holding a
    character of the route's terminator (a CR or an LF), which the route's writer quotes; the
    rows holding one are written again by the route's writer.
    """

    def __init__(self, source: RowSource, batch_rows: int, line_terminator: str) -> None:
        self._source = source
        self._unterminated = _Written()
        self._writer = csv.writer(self._unterminated, lineterminator="")
        self._terminated = _Written()
        self._exact_writer = csv.writer(self._terminated, lineterminator=line_terminator)
        self._line_terminator = line_terminator
        self._header = ""
        self._next_rows = min(FIRST_BATCH_ROWS, batch_rows)
        self._batch_rows = batch_rows
        self._exhausted = False

    def first(self, query: str, params: Mapping[str, Value]) -> bytes:
        self._exact_writer.writerow(self._source.execute(query, params))
        self._header = self._terminated.lines.pop()
        return self._batch()

    def next(self) -> bytes:
        return b"" if self._exhausted else self._batch()

    def _batch(self) -> bytes:
        rows = self._source.fetch(self._next_rows)
        self._exhausted = len(rows) < self._next_rows
        self._next_rows = min(self._next_rows * 2, self._batch_rows)
        self.rows += len(rows)
        lines = self._unterminated.lines
        self._writer.writerows(rows)
        terminator = self._line_terminator
        for index in sorted(
            {
                index
                for character in set(terminator)
                for index in compress(
                    range(len(lines)), map(operator.contains, lines, repeat(character))
                )
            }
        ):
            self._exact_writer.writerow(rows[index])
            lines[index] = self._terminated.lines.pop()[: -len(terminator)]
        lines.append("")  # the last record's terminator
        text = self._header + terminator.join(lines)
        lines.clear()
        self._header = ""
        return text.encode("utf-8")

    def interrupt(self) -> None:
        self._source.interrupt()

    def close(self) -> None:
        self._source.close()


class _Written:
    """What a csv writer writes to: each row it writes is one string in ``lines``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.write = self.lines.append


# SQLite's STRICT column types, and the Arrow type ADBC's driver must have inferred for each
# from its first batch for the whole result to read without a mismatch. BLOB and ANY are not
# here: Arrow's CSV writer has no text for binary values, and ANY holds any type.
# What the arrow engine imports: the fork server loads them once such a route exists.
ARROW_MODULES = ("pyarrow.csv", "pyarrow.compute", "adbc_driver_sqlite.dbapi", "apsw")
STRICT_ARROW_TYPES = {"INTEGER": "int64", "INT": "int64", "REAL": "double", "TEXT": "string"}


class ArrowCsv(CsvChunks):
    """``engine = "arrow"``: SQLite rows read by ADBC's SQLite driver into Arrow batches and
    written by Arrow's CSV writer, in C++ and without the GIL (the ``arrow`` extra, imported
    here, in the export process, only when such a route exports).

    ADBC infers each column's type from its first batch of rows and fails on a later row of
    another type, so before the first byte this checks that it cannot: every result column
    must be a column of a STRICT table (whose cells can only be of its type, or NULL), of a
    type the writer can format, and ADBC must have inferred that very type (a column that is
    NULL throughout the first batch reads as an integer). When any of that fails the export
    runs on the default engine instead, and the log says why. ``strict_result`` reads the
    columns' origins with apsw (part of the extra): the standard sqlite3 module cannot. The
    byte-level differences from the default engine are in docs/csv-exports.md.
    """

    def __init__(
        self, uri: str, batch_rows: int, line_terminator: str, escape_formulas: bool
    ) -> None:
        self._uri = uri
        self._batch_rows = batch_rows
        self._next_rows = min(FIRST_BATCH_ROWS, batch_rows)
        self._line_terminator = line_terminator
        self._escape_formulas = escape_formulas
        self._fallback: CsvChunks | None = None
        self._connection: Any = None
        self._cursor: Any = None
        self._reader: Any = None
        self._writer: Any = None
        self._sink = io.BytesIO()
        self._exhausted = False

    def first(self, query: str, params: Mapping[str, Value]) -> bytes:
        bound = {name: _sqlite_value(value) for name, value in params.items()}
        try:
            reason = self._open(query, bound)
        except ImportError as error:
            reason = f"the arrow extra is not installed ({error.name})"
        if reason is not None:
            log.info("export: the arrow engine hands over to the default one: %s", reason)
            self.close()
            source: RowSource = SqliteRows(self._uri)
            if self._escape_formulas:
                source = FormulaEscapedRows(source)
            self._fallback = SqliteCsv(source, self._batch_rows, self._line_terminator)
            return self._fallback.first(query, params)
        return self._batch()

    def _open(self, query: str, bound: Mapping[str, Value]) -> str | None:
        """Start the query on ADBC; None, or why it should not run there."""
        import adbc_driver_sqlite.dbapi
        import pyarrow.csv

        checked = strict_result(self._uri, query, bound)
        if isinstance(checked, str):
            return checked
        positional, expected = checked
        try:
            self._connection = adbc_driver_sqlite.dbapi.connect(self._uri)
            self._cursor = self._connection.cursor()
            self._cursor.execute(query, positional)
            self._reader = self._cursor.fetch_record_batch()
        except Exception as error:  # ADBC's errors; the default engine reports the query's
            return f"ADBC: {error}"
        for field, declared in zip(self._reader.schema, expected, strict=True):
            if str(field.type) != STRICT_ARROW_TYPES[declared]:
                return (
                    f"column {field.name!r} is {declared} but its first rows read as "
                    f"{field.type} (NULL throughout them?)"
                )
        self._writer = pyarrow.csv.CSVWriter(
            self._sink,
            self._reader.schema,
            write_options=pyarrow.csv.WriteOptions(eol=self._line_terminator),
        )
        return None

    def next(self) -> bytes:
        if self._fallback is not None:
            return self._fallback.next()
        return b"" if self._exhausted else self._batch()

    def _batch(self) -> bytes:
        want = self._next_rows
        self._next_rows = min(self._next_rows * 2, self._batch_rows)
        rows = 0
        while rows < want:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                self._exhausted = True
                break
            except Exception as error:  # a run-time error of the query (not a type: checked)
                raise QueryFailed(f"ADBC: {error}") from error
            if self._escape_formulas:
                batch = _escape_arrow_formulas(batch)
            self._writer.write_batch(batch)
            rows += batch.num_rows
        self.rows += rows
        chunk = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return chunk

    def interrupt(self) -> None:
        """Nothing to do: ADBC cannot interrupt a statement; the process's exit ends it."""

    def close(self) -> None:
        if self._fallback is not None:
            self._fallback.close()
        for resource in (self._reader, self._cursor, self._connection):
            if resource is not None:
                with contextlib.suppress(Exception):
                    resource.close()
        self._reader = self._cursor = self._connection = None


def strict_result(
    uri: str, query: str, bound: Mapping[str, Value]
) -> tuple[list[Value], list[str]] | str:
    """The query's parameters in SQLite's order (ADBC binds by position) and each result
    column's STRICT type; or why the result's types are not fixed. Nothing is run: apsw's
    execution tracer reads the prepared statement and stops it before its first step."""
    import apsw

    described: dict[str, Any] = {}

    def inspect(cursor: Any, sql: str, bindings: Any) -> bool:
        described["columns"] = cursor.description_full
        described["names"] = cursor.bindings_names
        return False

    try:
        connection = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error as error:
        return f"apsw: {error}"
    try:
        cursor = connection.cursor()
        cursor.exec_trace = inspect
        with contextlib.suppress(apsw.ExecTraceAbort):
            cursor.execute(query, dict(bound))
        strict = {
            (schema, table)
            for schema, table, *_, is_strict in connection.execute("PRAGMA table_list")
            if is_strict
        }
    except apsw.Error as error:
        return f"apsw: {error}"
    finally:
        connection.close()
    expected = []
    for name, declared, schema, table, _ in described["columns"]:
        if table is None:
            return f"column {name!r} is an expression, not a table's column"
        if (schema, table) not in strict:
            return f"column {name!r} comes from {table!r}, not a STRICT table"
        if (declared or "").upper() not in STRICT_ARROW_TYPES:
            return f"column {name!r} is {declared}, which the arrow engine does not write"
        expected.append(declared.upper())
    names = described["names"]
    if None in names:
        return "the query has a positional parameter"
    return [bound[name] for name in names], expected


def _escape_arrow_formulas(batch: Any) -> Any:
    """``escape_formula`` on every string column of an Arrow batch, in Arrow's compute."""
    import pyarrow
    import pyarrow.compute as compute

    columns = []
    for column in batch.columns:
        if pyarrow.types.is_string(column.type):
            risky = compute.and_(
                compute.match_substring_regex(column, f"^[{_formula_class()}]"),
                compute.invert(compute.match_substring_regex(column, f"^(?:{PLAIN_NUMBER})$")),
            )
            column = compute.if_else(
                risky, compute.binary_join_element_wise("'", column, ""), column
            )
        columns.append(column)
    return pyarrow.RecordBatch.from_arrays(columns, schema=batch.schema)


def _formula_class() -> str:
    """FORMULA_STARTS as a regular expression's bracket expression: "-" first (elsewhere it
    would make a range), tab and CR as the \\t and \\r escapes PostgreSQL and RE2 share."""
    starts = "".join(sorted(FORMULA_STARTS, key=lambda start: start != "-"))
    return starts.replace("\t", "\\t").replace("\r", "\\r")


# The server writes the CSV: rows never become Python objects. The query goes on lines of its
# own, so a trailing -- comment cannot swallow the closing parenthesis.
COPY_STATEMENT = "COPY (\n{query}\n) TO STDOUT (FORMAT csv, HEADER)"
# How often PostgreSQL checks, while a query computes without sending, that the export process
# is still connected (PostgreSQL 14+): a cancel request that lands before its statement starts
# is lost, and a killed process sends none, but its closed socket is seen within this.
CLIENT_CHECK_INTERVAL = "1s"
# A cancel request is a new connection to the server; past this the process exits anyway.
CANCEL_TIMEOUT_S = 3.0
# What get_copy_data answers when libpq holds no whole message; a message is its second item.
_NOTHING_BUFFERED = (0, b"")
_MESSAGE = operator.itemgetter(1)
_ALL_BUT_LF = slice(None, -1)


class PostgresCopy(CsvChunks):
    """PostgreSQL's own CSV, from ``COPY (query) TO STDOUT``, passed through in batches.

    COPY takes no bound parameters, so psycopg writes them into the statement as literals,
    client-side, with the connection's own quoting rules (``ClientCursor.mogrify``): the
    values are typed by ``mediaproxy.http.params`` and quoted by psycopg, never formatted in.
    The statement runs in a READ ONLY transaction. libpq is driven without blocking (each
    wait a ``select``, which releases the GIL for the thread that may cancel), one CopyData
    message per row: PostgreSQL sends exactly one row per message (its protocol manual, "COPY
    Operations"), which is what makes the line-end conversion exact.

    The header is PostgreSQL's first message; it leaves with the first batch, so a query that
    fails before its first batch is whole (a division by zero in row 1) is still a 502.
    """

    def __init__(
        self, url: str, batch_rows: int, line_terminator: str, escape_formulas: bool = False
    ) -> None:
        self._url = url
        self._escape_formulas = escape_formulas
        self._batch_rows = batch_rows
        self._next_rows = min(FIRST_BATCH_ROWS, batch_rows)
        self._crlf = line_terminator == "\r\n"
        self._connection: Any = None
        self._psycopg: Any = None
        self._done = False

    def first(self, query: str, params: Mapping[str, Value]) -> bytes:
        psycopg = self._psycopg = _import_psycopg()
        try:
            connection = self._connection = psycopg.connect(self._url, autocommit=True)
            connection.execute("BEGIN READ ONLY")
            if connection.info.server_version >= 140000:
                connection.execute(
                    f"SET LOCAL client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'"
                )
            query = psycopg.ClientCursor(connection).mogrify(query, dict(params))
            if self._escape_formulas:
                query = formula_escaped_query(connection, query)
            statement = COPY_STATEMENT.format(query=query)
            pgconn = connection.pgconn
            pgconn.nonblocking = 1
            pgconn.send_query(statement.encode(connection.info.encoding))
            while pgconn.flush():
                self._wait(writable=True)
            result = self._result()
            if result.status != psycopg.pq.ExecStatus.COPY_OUT:
                raise QueryFailed(f"PostgreSQL: {_error_message(result)}")
            return self._batch(header=True)
        except psycopg.Error as error:
            raise QueryFailed(f"PostgreSQL: {error}") from error

    def next(self) -> bytes:
        if self._done:
            return b""
        try:
            return self._batch(header=False)
        except self._psycopg.Error as error:
            raise QueryFailed(f"PostgreSQL: {error}") from error

    def _batch(self, header: bool) -> bytes:
        """The next ``_next_rows`` rows or more (after the header, when asked), as one chunk."""
        want = self._next_rows + header
        self._next_rows = min(self._next_rows * 2, self._batch_rows)
        messages: list[Any] = []
        receive = functools.partial(self._connection.pgconn.get_copy_data, 1)
        while not self._done:
            try:
                # Every row libpq has buffered, without a line of Python per row: the
                # iterator calls get_copy_data until it answers "nothing buffered", and
                # only the message is kept.
                messages.extend(map(_MESSAGE, iter(receive, _NOTHING_BUFFERED)))
            except self._psycopg.OperationalError:
                # The COPY's end (-1) reads as an empty message, and libpq refuses the call
                # after it; any other refusal (a lost connection) is the query's failure.
                if not messages or messages[-1]:
                    raise
                messages.pop()
                self._done = True
                result = self._result()
                if result.status != self._psycopg.pq.ExecStatus.COMMAND_OK:
                    raise QueryFailed(f"PostgreSQL: {_error_message(result)}") from None
                break
            if len(messages) >= want:
                break
            self._wait()
        self.rows += len(messages) - header
        if not self._crlf or not messages:
            return b"".join(messages)
        # Each message ends in its record's LF, which becomes CRLF; a quoted line break
        # inside a field stays as it was. A CR after every message puts LF CR at the records'
        # ends, where one replace swaps them, unless a field holds LF CR itself.
        count = len(messages)
        messages.append(b"")
        joined = b"\r".join(messages)
        if joined.count(b"\n\r") == count:
            return joined.replace(b"\n\r", b"\r\n")
        del messages[count:]
        return b"\r\n".join(map(operator.getitem, messages, repeat(_ALL_BUT_LF))) + b"\r\n"

    def _result(self) -> Any:
        pgconn = self._connection.pgconn
        pgconn.consume_input()
        while pgconn.is_busy():
            self._wait()
        return pgconn.get_result()

    def _wait(self, writable: bool = False) -> None:
        """Until the server's socket is ready; then read what arrived."""
        pgconn = self._connection.pgconn
        if writable:
            select.select([], [pgconn.socket], [])
        else:
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()

    def interrupt(self) -> None:
        if self._connection is not None:
            try:
                self._connection.cancel_safe(timeout=CANCEL_TIMEOUT_S)
            except Exception as error:  # psycopg.Error, or the connection not ready yet
                log.debug("PostgreSQL cancel request failed: %s", error)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()  # ends the COPY and the read-only transaction with it


# PostgreSQL's type category of the string types (text, varchar, char, name, and domains and
# extension types over them): the columns whose cells escape_formulas may change. Numbers keep
# their sign, and no other type's text output starts with a formula character.
STRING_CATEGORY = "S"


def formula_escaped_query(connection: Any, query: str) -> str:
    """``query`` (its parameters already written in) wrapped so that PostgreSQL escapes the
    formula cells itself, by ``escape_formula``'s rule: the CSV still never enters Python.

    The wrapper renames the result's columns by position (``AS q(c1, c2...)``, so duplicate
    or odd names cannot clash) and gives each its name back: the header is unchanged. Which
    columns are strings comes from the query's result description (run with LIMIT 0) and
    pg_type. A string cell is read with ``format('%s', ...)``, its type's own text output
    (char(n) keeps its padding), and NULL stays NULL.
    """
    from psycopg.sql import Identifier

    columns = connection.execute(f"SELECT * FROM (\n{query}\n) AS q LIMIT 0").description
    oids = [column.type_code for column in columns]
    strings = {
        oid
        for (oid,) in connection.execute(
            "SELECT oid::int8 FROM pg_type WHERE oid = ANY(%s::oid[]) AND typcategory = %s",
            [oids, STRING_CATEGORY],
        )
    }
    starts = _formula_class()
    outputs = []
    for position, column in enumerate(columns, 1):
        value = f"q.c{position}"
        if column.type_code in strings:
            text = f"format('%s', {value})"
            value = (
                f"CASE WHEN {value} IS NULL THEN NULL "
                f"WHEN {text} ~ '^[{starts}]' AND {text} !~ '^(?:{PLAIN_NUMBER})$' "
                f"THEN '''' || {text} ELSE {text} END"
            )
        outputs.append(f"{value} AS {Identifier(column.name).as_string(connection)}")
    aliases = ", ".join(f"c{position}" for position in range(1, len(columns) + 1))
    return f"SELECT {', '.join(outputs)} FROM (\n{query}\n) AS q({aliases})"


def _error_message(result: Any) -> str:
    message: bytes = result.error_message
    return message.decode("utf-8", "replace").strip()


class CsvExportIntegration(Integration):
    def __init__(self, route: Route) -> None:
        super().__init__(route)
        settings: CsvExportSettings = route.settings
        self.settings = settings
        # Imported once, in the fork server, rather than by every export process.
        if settings.is_postgres:
            _fork_server.warm("psycopg")
        elif settings.engine == "arrow":
            for module in ARROW_MODULES:
                _fork_server.warm(module)

    def _job(self, params: Mapping[str, Value]) -> ExportJob:
        settings = self.settings
        return ExportJob(
            database=settings.database if settings.is_postgres else settings.sqlite_uri,
            postgres=settings.is_postgres,
            engine=settings.engine,
            query=settings.query,
            params=params,
            niceness=settings.niceness,
            scheduling=settings.scheduling,
            batch_rows=settings.batch_rows,
            line_terminator=settings.line_terminator,
            escape_formulas=settings.escape_formulas,
        )

    async def respond(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(request.method, ("GET", "HEAD"))
        if request.path not in ("", "/"):
            raise RequestError(
                f"no export at {request.path!r}", phrase="Bad Request: this export has no sub-paths"
            )
        try:
            params = parse_query(request.query, self.settings.params)
        except InvalidParameter as error:
            raise RequestError(str(error), phrase=f"Bad Request: {error}") from None
        headers = [
            ("Content-Type", CONTENT_TYPE),
            ("Content-Disposition", content_disposition(self._filename(params))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if request.method == "HEAD":
            exchange.start(200, headers)  # the headers a GET would get, without the query
            return
        try:
            process = ExportProcess(_fork_server.spawn(__name__))
        except OSError as error:
            log.error("export %s: no export process: %s", self.route.prefix, error)
            raise UpstreamError(
                str(error), phrase="Bad Gateway: the export could not start"
            ) from None
        sent = 0
        try:
            try:
                await process.start(self._job(params))
                chunk = await process.read()
            except QueryFailed as error:
                log.warning(
                    "export %s: query failed before the first row: %s", self.route.prefix, error
                )
                raise UpstreamError(
                    str(error), phrase="Bad Gateway: the export query failed"
                ) from None
            exchange.start(200, headers)
            while chunk:
                await exchange.send(chunk)
                sent += len(chunk)
                try:
                    chunk = await process.read()
                except QueryFailed as error:
                    log.warning(
                        "export %s: query failed after %d bytes: %s", self.route.prefix, sent, error
                    )
                    raise UpstreamError(str(error)) from None
            await exchange.finish()
            log.debug(
                "export %s: %d rows, %d bytes; the export process peaked at %d KiB",
                self.route.prefix,
                process.rows,
                sent,
                process.peak_rss_kib,
            )
        finally:
            process.close()

    def _filename(self, params: Mapping[str, Value]) -> str:
        return render_filename(
            self.settings.filename, params, today=datetime.now(timezone.utc).date().isoformat()
        )


# What an absent optional parameter takes along from the text before it.
_FILENAME_SEPARATORS = "-_ ."


def render_filename(template: str, params: Mapping[str, Value], today: str) -> str:
    """The ``filename`` template with ``{date}`` and the parameters' values filled in.

    An absent optional parameter (None) is left out with the one separator before it, so
    ``orders-since-{since}-{status}.csv`` names both downloads of the README's examples
    differently (``...-paid.csv`` and ``....csv``) with no dangling ``-``.
    """
    values: Mapping[str, Value | str] = {**params, "date": today}
    formatter = string.Formatter()
    out: list[str] = []
    for literal, field, spec, conversion in formatter.parse(template):
        out.append(literal)
        if field is None:
            continue
        value = values[field]
        if value is None:
            if out[-1] and out[-1][-1] in _FILENAME_SEPARATORS:
                out[-1] = out[-1][:-1]
            continue
        out.append(format(formatter.convert_field(str(value), conversion), spec or ""))
    return "".join(out)
