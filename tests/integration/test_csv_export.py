"""The csv_export integration over real sockets, against real SQLite and PostgreSQL databases.

Every scenario runs once per database: SQLite always, PostgreSQL against the throwaway server
that the ``postgres_url`` fixture starts (see conftest.py).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mediaproxy.integrations import csv_export
from mediaproxy.integrations import export_processes as export_processes_module
from mediaproxy.integrations.csv_export import PostgresCopy, QueryFailed

from .support import (
    GatewayThread,
    open_stalled_download,
    read_cut_response,
    request,
    series,
    wait_for_no_streams,
    wait_until,
)

# The values CSV exports get wrong: separators, quotes, line breaks, NULL against '', non-ASCII
# and a formula that must reach the client unchanged.
ROWS = [
    (1, "plain", 10, "2024-01-05", None),
    (2, 'comma, and "quotes"', -3, "2024-02-10", ""),
    (3, "line\nbreak", 0, "2024-03-15", "crlf\r\ninside"),
    (4, "Zoë 東京 📦", 7, "2024-04-20", "=SUM(A1:A9)"),
    (5, " leading and trailing ", 2, "2024-05-25", "tab\there"),
]
COLUMNS = ["id", "label", "qty", "day", "note"]
# Cells a spreadsheet reads as a formula (OWASP's CSV-injection list), and neighbours it must
# not touch: numbers, a sign inside the text, an empty cell, NULL.
CELLS = [
    (1, "=1+2", "'=1+2"),
    (2, "+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    (3, "-2+3", "'-2+3"),
    (4, "@SUM(1)", "'@SUM(1)"),
    (5, "\tleading tab", "'\tleading tab"),
    (6, "\rleading cr", "'\rleading cr"),
    (7, "-3", "-3"),
    (8, "+2.5e-3", "+2.5e-3"),
    (9, "a=b", "a=b"),
    (10, "", ""),
    (11, None, None),
    (12, "'=already", "'=already"),
]


def expected_csv(
    columns: list[str],
    rows: list[tuple[object, ...]],
    db: ExportDatabase,
    line_terminator: str = "\r\n",
) -> bytes:
    """RFC 4180 as the integration promises it: CRLF records (or the route's line terminator),
    minimal quoting, NULL an empty field; the empty string is one too, except from PostgreSQL,
    whose COPY writes it as ``""`` (so NULL and '' stay apart)."""
    empty = "\x00empty\x00"  # no character the writer quotes for
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_terminator)
    writer.writerow(columns)
    writer.writerows([["" if v is None else empty if v == "" else v for v in row] for row in rows])
    return buffer.getvalue().replace(empty, '""' if db.name == "postgres" else "").encode()


NEVER_ENDS = (
    "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s) SELECT count(*) FROM s"
)


@dataclass
class ExportDatabase:
    """One database and the SQL dialect of the scenarios that run on it."""

    name: str
    database: str  # the route's `database` value
    placeholder: Callable[[str, str], str]  # ("since", "date") -> ":since" or "%(since)s::date"
    fails_at_row: Callable[[int], str]  # SELECT whose row n raises an error


def every_chunk(chunks: csv_export.CsvChunks, query: str) -> bytes:
    """The whole CSV that ``chunks`` produce for ``query``, batch after batch, then closed."""
    try:
        body = chunks.first(query, {})
        while chunk := chunks.next():
            body += chunk
    finally:
        chunks.close()
    return body


def sqlite_database(tmp_path: Path) -> ExportDatabase:
    path = tmp_path / "export.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE items (id INTEGER, label TEXT, qty INTEGER, day TEXT, note TEXT)"
        )
        connection.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", ROWS)
        connection.execute("CREATE TABLE cells (n INTEGER, v TEXT)")
        connection.executemany("INSERT INTO cells VALUES (?, ?)", [c[:2] for c in CELLS])
    connection.close()

    def fails_at_row(row: int) -> str:
        # abs() of the smallest integer overflows: a runtime error at exactly that row.
        return series(10 * row, f"abs(CASE WHEN i = {row} THEN -9223372036854775808 ELSE i END)")

    return ExportDatabase("sqlite", str(path), lambda name, _: f":{name}", fails_at_row)


def postgres_database(url: str) -> ExportDatabase:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS items")
        connection.execute(
            "CREATE TABLE items (id integer, label text, qty integer, day date, note text)"
        )
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO items VALUES (%s, %s, %s, %s, %s)", ROWS)
        connection.execute("DROP TABLE IF EXISTS cells")
        connection.execute("CREATE TABLE cells (n integer, v text)")
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO cells VALUES (%s, %s)", [c[:2] for c in CELLS])

    return ExportDatabase(
        "postgres",
        url,
        lambda name, sql_type: f"%({name})s::{sql_type}",
        fails_at_row=lambda row: series(10 * row, f"1 / (i - {row})"),
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> ExportDatabase:
    if request.param == "sqlite":
        return sqlite_database(tmp_path)
    return postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def gateway(make_gateway, db: ExportDatabase) -> GatewayThread:  # type: ignore[no-untyped-def]
    p = db.placeholder
    fat_rows = series(10**9, "'" + "x" * 200 + "'")
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/items"
        integration = "csv_export"
        database = "{db.database}"
        query = '''SELECT id, label, qty, day, note FROM items
                   WHERE day >= {p("since", "date")}
                     AND ({p("label", "text")} IS NULL OR label = {p("label", "text")})
                   ORDER BY id'''
        params = {{ since = "date", label = "text?" }}
        filename = "items-{{since}}-{{date}}.csv"
        [[routes]]
        prefix = "/items-lf"
        integration = "csv_export"
        database = "{db.database}"
        query = '''SELECT id, label, qty, day, note FROM items
                   WHERE day >= {p("since", "date")} ORDER BY id'''
        params = {{ since = "date" }}
        line_terminator = "lf"
        [[routes]]
        prefix = "/typed"
        integration = "csv_export"
        database = "{db.database}"
        query = '''SELECT {p("n", "bigint")} AS n, {p("x", "float8")} AS x,
                          {p("flag", "boolean")} AS flag, {p("at", "timestamptz")} AS at'''
        params = {{ n = "integer", x = "number", flag = "boolean", at = "datetime" }}
        [[routes]]
        prefix = "/series"
        integration = "csv_export"
        database = "{db.database}"
        query = "{series(50_000, "i * 2")}"
        batch_rows = 3000
        [[routes]]
        prefix = "/fails-first"
        integration = "csv_export"
        database = "{db.database}"
        query = "{db.fails_at_row(1)}"
        [[routes]]
        prefix = "/fails-later"
        integration = "csv_export"
        database = "{db.database}"
        query = "{db.fails_at_row(40_000)}"
        [[routes]]
        prefix = "/endless"
        integration = "csv_export"
        database = "{db.database}"
        query = "{fat_rows}"
        [[routes]]
        prefix = "/endless-idle"
        integration = "csv_export"
        database = "{db.database}"
        query = "{fat_rows}"
        scheduling = "idle"
        [[routes]]
        prefix = "/never"
        integration = "csv_export"
        database = "{db.database}"
        query = "{NEVER_ENDS}"
        idle_timeout = 1
        [[routes]]
        prefix = "/cells"
        integration = "csv_export"
        database = "{db.database}"
        query = "SELECT n, v FROM cells ORDER BY n"
        [[routes]]
        prefix = "/cells-escaped"
        integration = "csv_export"
        database = "{db.database}"
        query = "SELECT n, v FROM cells ORDER BY n"
        escape_formulas = true
        [[routes]]
        prefix = "/items-escaped"
        integration = "csv_export"
        database = "{db.database}"
        query = "SELECT id, qty, note FROM items ORDER BY id"
        escape_formulas = true
    """)
    return gateway


def test_rows_stream_as_rfc4180_csv(gateway: GatewayThread, db: ExportDatabase) -> None:
    reply = request(gateway.port, "GET", "/items?since=2024-01-01")
    assert reply.status == 200
    assert reply.body == expected_csv(COLUMNS, ROWS, db)
    assert reply.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert reply.headers["transfer-encoding"] == "chunked"
    today = datetime.now(timezone.utc).date().isoformat()
    assert reply.headers["content-disposition"] == (
        f'attachment; filename="items-2024-01-01-{today}.csv"'
    )
    # Parsed back by a CSV reader, the values are the database's.
    parsed = list(csv.reader(io.StringIO(reply.body.decode(), newline="")))
    assert parsed[1:] == [[str(v) if v is not None else "" for v in row] for row in ROWS]


def test_a_route_may_end_records_with_lf(gateway: GatewayThread, db: ExportDatabase) -> None:
    reply = request(gateway.port, "GET", "/items-lf?since=2024-01-01")
    assert reply.body == expected_csv(COLUMNS, ROWS, db, line_terminator="\n")


def test_formulas_pass_unchanged_by_default(gateway: GatewayThread, db: ExportDatabase) -> None:
    reply = request(gateway.port, "GET", "/cells")
    assert reply.body == expected_csv(["n", "v"], [c[:2] for c in CELLS], db)


def test_escape_formulas_quotes_cells_a_spreadsheet_would_run(
    gateway: GatewayThread, db: ExportDatabase
) -> None:
    reply = request(gateway.port, "GET", "/cells-escaped")
    assert reply.status == 200
    assert reply.body == expected_csv(["n", "v"], [(n, escaped) for n, _, escaped in CELLS], db)
    # Columns the database types as numbers keep their sign, whichever engine formats them.
    reply = request(gateway.port, "GET", "/items-escaped")
    assert reply.body == expected_csv(
        ["id", "qty", "note"],
        [
            (1, 10, None),
            (2, -3, ""),
            (3, 0, "crlf\r\ninside"),
            (4, 7, "'=SUM(A1:A9)"),
            (5, 2, "tab\there"),
        ],
        db,
    )


def test_parameters_are_bound_not_spliced(gateway: GatewayThread, db: ExportDatabase) -> None:
    reply = request(
        gateway.port,
        "GET",
        "/items?since=2024-03-01&label=Zo%C3%AB%20%E6%9D%B1%E4%BA%AC%20%F0%9F%93%A6",
    )
    assert reply.body == expected_csv(COLUMNS, [ROWS[3]], db)
    quoted = "/items?since=2024-01-01&label=comma%2C%20and%20%22quotes%22"
    assert request(gateway.port, "GET", quoted).body == expected_csv(COLUMNS, [ROWS[1]], db)
    for injection in (
        "%27%20OR%20%271%27%3D%271",  # ' OR '1'='1
        "%5C%27%20OR%201%3D1%20--%20",  # \' OR 1=1 --
        "%27%29%20TO%20STDOUT%3B%20SELECT%201%3B%20--",
    ):  # ') TO STDOUT; ...
        reply = request(gateway.port, "GET", f"/items?since=2024-01-01&label={injection}")
        assert reply.body == expected_csv(COLUMNS, [], db)


def test_typed_parameters_reach_the_database(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/typed?n=-42&x=2.5&flag=true&at=2024-06-01T12:00:00Z")
    assert reply.status == 200
    header, values = reply.body.decode().split("\r\n")[:2]
    assert header == "n,x,flag,at"
    n, x, flag, at = values.split(",")
    assert (n, x) == ("-42", "2.5")
    assert flag in ("1", "t", "true")  # SQLite binds booleans as integers
    assert at.startswith("2024-06-01")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", b"400 Bad Request: parameter 'since': is required: a date YYYY-MM-DD\n"),
        (
            "?since=2024-13-01",
            b"400 Bad Request: parameter 'since': must be a date YYYY-MM-DD, got '2024-13-01'\n",
        ),
        (
            "?since=2024-01-01&colour=red",
            b"400 Bad Request: parameter 'colour': unknown "
            b"parameter; this export takes label, since\n",
        ),
        (
            "?since=2024-01-01&since=2024-01-02",
            b"400 Bad Request: parameter 'since': given more than once\n",
        ),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    gateway: GatewayThread, query: str, message: bytes
) -> None:
    reply = request(gateway.port, "GET", "/items" + query)
    assert (reply.status, reply.body) == (400, message)


def test_head_answers_the_get_headers_without_a_body(gateway: GatewayThread) -> None:
    got = request(gateway.port, "GET", "/items?since=2024-01-01")
    head = request(gateway.port, "HEAD", "/items?since=2024-01-01")
    assert head.status == 200 and head.body == b""
    assert "content-length" not in head.headers
    for name in ("content-type", "content-disposition", "cache-control"):
        assert head.headers[name] == got.headers[name]


def test_other_methods_and_sub_paths_are_refused(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "POST", "/items?since=2024-01-01", body=b"x")
    assert (reply.status, reply.headers["allow"]) == (405, "GET, HEAD")
    assert request(gateway.port, "GET", "/items/more?since=2024-01-01").status == 400


def test_many_batches_arrive_whole_and_in_order(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/series")
    lines = reply.body.decode().split("\r\n")
    assert lines[0] == "i,extra" and lines[-1] == ""
    assert lines[1:-1] == [f"{i},{i * 2}" for i in range(1, 50_001)]


def test_a_query_failing_before_the_first_row_is_502(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/fails-first")
    assert reply.status == 502
    assert reply.body == b"502 Bad Gateway: the export query failed\n"


def test_a_query_failing_mid_stream_aborts_the_response(gateway: GatewayThread) -> None:
    rows = read_cut_response(gateway.port, "/fails-later").count(b"\r\n") - 1
    assert 0 < rows < 40_000


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_sees_a_failed_export_as_incomplete(gateway: GatewayThread, tmp_path: Path) -> None:
    result = subprocess.run(
        ["curl", "-sS", "-o", str(tmp_path / "out.csv"), f"{gateway.base_url}/fails-later"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 18, result.stderr  # CURLE_PARTIAL_FILE


def bytes_sent_by_active_streams(gateway: GatewayThread) -> int:
    assert gateway.running is not None
    active = gateway.running.gateway.active
    return int(gateway.call(lambda: sum(h.exchange.bytes_sent for h in active)))  # type: ignore[arg-type]


def test_a_slow_client_pauses_the_query(gateway: GatewayThread) -> None:
    """Not reading: the socket buffers fill, then the export must wait. How soon depends on
    the machine's load (the export process runs niced), so this waits for the bytes sent to
    stop growing; an export that ran ahead of the client would never stop."""
    sock = open_stalled_download(gateway.port, "/endless")
    try:
        deadline = time.monotonic() + 30
        sent, previous = bytes_sent_by_active_streams(gateway), -1
        while sent != previous or sent == 0:
            assert time.monotonic() < deadline, "the export ran ahead of the client"
            time.sleep(0.5)
            sent, previous = bytes_sent_by_active_streams(gateway), sent
        time.sleep(0.5)
        assert bytes_sent_by_active_streams(gateway) == sent
        # A billion 200-byte rows were available; what left is the kernel buffers plus a
        # batch or two.
        assert sent < 32 * 1024 * 1024
    finally:
        sock.close()
    wait_for_no_streams(gateway)


def test_timers_and_disconnects_interrupt_running_queries(gateway: GatewayThread) -> None:
    """More never-ending queries than export threads: each must be interrupted to free one."""

    def cut_by_idle_timer() -> int:
        return request(gateway.port, "GET", "/never", timeout=30).status

    def cut_by_disconnect() -> None:
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)

    with ThreadPoolExecutor(6) as clients:
        timed = [clients.submit(cut_by_idle_timer) for _ in range(3)]
        cut = [clients.submit(cut_by_disconnect) for _ in range(3)]
        assert [future.result() for future in timed] == [504, 504, 504]
        for future in cut:
            future.result()
    started = time.monotonic()
    reply = request(gateway.port, "GET", "/items?since=2024-01-01", timeout=10)
    assert reply.status == 200 and time.monotonic() - started < 5
    wait_for_no_streams(gateway)


def test_a_sqlite_path_with_query_and_fragment_characters_stays_read_only(
    make_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The path is a file: URI's path, escaped; formatted in raw, '?' began its query (so
    mode=ro was lost and SQLite created the truncated name read-write) and '#' its fragment."""
    folder = tmp_path / "odd?dir#1"
    folder.mkdir()
    database = sqlite_database(folder)
    path = folder / "ex?port#2%41.sqlite"
    Path(database.database).rename(path)
    gateway = make_gateway(f"""
        [[routes]]
        prefix = "/items"
        integration = "csv_export"
        database = '{path}'
        query = "SELECT id, label, qty, day, note FROM items ORDER BY id"
        [[routes]]
        prefix = "/write"
        integration = "csv_export"
        database = '{path}'
        query = "INSERT INTO items (id) VALUES (99) RETURNING id"
    """)
    assert request(gateway.port, "GET", "/items").body == expected_csv(COLUMNS, ROWS, database)
    assert request(gateway.port, "GET", "/write").status == 502  # read-only: refused
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (len(ROWS),)
    connection.close()
    assert [p.name for p in folder.iterdir()] == [path.name]
    assert not (tmp_path / "odd").exists()  # what the raw URI named, created read-write


def test_postgres_exports_run_as_one_copy_in_a_read_only_transaction(
    make_gateway, postgres_url: str
) -> None:  # type: ignore[no-untyped-def]
    """The server formats the CSV itself (COPY ... TO STDOUT), so rows never become Python
    objects; the statement is the configured query with its parameters as literals."""
    gateway = make_gateway(f'''
        [[routes]]
        prefix = "/me"
        integration = "csv_export"
        database = "{postgres_url}"
        query = """SELECT query, current_setting('transaction_read_only') AS read_only,
                          %(tag)s::text AS tag
                   FROM pg_stat_activity WHERE pid = pg_backend_pid()"""
        params = {{ tag = "text" }}
    ''')
    reply = request(gateway.port, "GET", "/me?tag=it%27s")
    assert reply.status == 200
    (row,) = list(csv.reader(io.StringIO(reply.body.decode(), newline="")))[1:]
    statement, read_only, tag = row
    assert statement.startswith("COPY (") and "TO STDOUT" in statement
    assert "'it''s'" in statement  # a literal psycopg quoted, not a bound $1
    assert (read_only, tag) == ("on", "it's")


def test_an_interrupt_stops_a_running_postgres_copy(postgres_url: str) -> None:
    chunks = PostgresCopy(postgres_url, 100, "\r\n")
    timer = threading.Timer(0.5, chunks.interrupt)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(QueryFailed):
            chunks.first("SELECT pg_sleep(60)", {})
    finally:
        timer.cancel()
        chunks.close()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("line_terminator", ["\r\n", "\n"])
def test_sqlite_rows_have_the_csv_modules_bytes_whatever_they_hold(
    tmp_path: Path, line_terminator: str
) -> None:
    """The default engine's bytes are those of one csv.writer with the route's terminator, for
    values that make it quote or not (CR alone, LF alone, both, the delimiter, quotes), NULL
    and empty cells, a row whose only cell is empty, non-text values, across batches."""
    values: list[object] = [
        "plain", "a,b", 'say "hi"', "cr\ronly", "lf\nonly", "both\r\n", "\n", "\r", "",
        None, 7, -2.5, 1e20, b"by,tes", "Zoë 📦", " spaced ",
    ]  # fmt: skip
    rows = [(i, values[i % len(values)], values[(i * 7) % len(values)]) for i in range(3000)]
    singles = [(values[i % len(values)],) for i in range(200)]
    path = tmp_path / "values.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE TABLE t (i, a, b)")
        connection.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        connection.execute("CREATE TABLE single (a)")
        connection.executemany("INSERT INTO single VALUES (?)", singles)
    uri = path.as_uri() + "?mode=ro"
    for query, expected_rows in [
        ("SELECT i, a, b AS [b,\r\nc] FROM t ORDER BY i", [["i", "a", "b,\r\nc"], *rows]),
        ("SELECT a FROM single ORDER BY rowid", [["a"], *singles]),
    ]:
        chunks = csv_export.SqliteCsv(csv_export.SqliteRows(uri), 700, line_terminator)
        body = every_chunk(chunks, query)
        expected = io.StringIO()
        csv.writer(expected, lineterminator=line_terminator).writerows(expected_rows)
        assert body == expected.getvalue().encode()


@pytest.mark.parametrize("line_terminator", ["\r\n", "\n"])
def test_postgres_line_ends_change_only_between_records_in_every_batch(
    postgres_url: str, line_terminator: str
) -> None:
    """Records end in the route's terminator across many batches, while line breaks inside
    fields (LF, CRLF, and LF CR, which looks like a record's end once a CR follows each
    record) keep their bytes. Early batches hold no line break in a field or only LFs; later
    ones every kind."""
    texts = ["a\nb", "c\r\nd", "e\n\rf", "g\n", "\rh"]
    literals = ", ".join(
        "'" + text.replace("\n", "' || chr(10) || '").replace("\r", "' || chr(13) || '") + "'"
        for text in texts
    )
    query = (
        # %% is a percent sign for psycopg, which reads the query for placeholders.
        f"SELECT i, CASE WHEN i %% 1000 = 0 THEN {literals.split(', ')[0]} "
        f"WHEN i > 10000 AND i %% 7 = 0 THEN (ARRAY[{literals}])[1 + (i / 7) %% 5] "
        "ELSE 'plain' END AS t FROM generate_series(1, 30000) AS i"
    )

    def text(i: int) -> str:
        if i % 1000 == 0:
            return texts[0]
        return texts[(i // 7) % 5] if i > 10000 and i % 7 == 0 else "plain"

    chunks = PostgresCopy(postgres_url, 700, line_terminator)
    body = every_chunk(chunks, query)
    records = ["i,t"] + [
        f"{i},{text(i)}" if text(i) == "plain" else f'{i},"{text(i)}"' for i in range(1, 30001)
    ]
    assert body == "".join(record + line_terminator for record in records).encode()
    assert chunks.rows == 30000


def test_postgres_escapes_formulas_in_sql_keeping_names_types_and_nulls(
    make_gateway, postgres_url: str
) -> None:  # type: ignore[no-untyped-def]
    """The escaping is SQL around the query: duplicate column names, char(n) padding, NULL
    against '', and non-string columns whose text starts with '-' all come through."""
    query = (
        'SELECT \'=a\'::char(4) AS "x", -1 AS "x", NULL::text AS "a ""b""", '
        "''::text AS e, interval '-1 day' AS i, '-7'::varchar AS n"
    )
    gateway = make_gateway(f"""
        [[routes]]
        prefix = "/odd"
        integration = "csv_export"
        database = "{postgres_url}"
        query = {json.dumps(query)}
        escape_formulas = true
    """)
    reply = request(gateway.port, "GET", "/odd")
    assert reply.body == b'x,x,"a ""b""",e,i,n\r\n\'=a  ,-1,,"",-1 days,-7\r\n'


# --- export processes ------------------------------------------------------------------------


def export_processes() -> list[int]:
    """The pids of the live export processes: the fork server's children."""
    server = csv_export._fork_server._process
    if server is None:
        return []
    pids: list[int] = []
    for task in Path(f"/proc/{server.pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            pids += [int(pid) for pid in (task / "children").read_text().split()]
    return pids


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def running_postgres_queries(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("path", "policy"), [("/endless", os.SCHED_BATCH), ("/endless-idle", os.SCHED_IDLE)]
)
def test_the_rows_are_produced_in_another_process(
    gateway: GatewayThread, path: str, policy: int
) -> None:
    sock = open_stalled_download(gateway.port, path)
    try:
        wait_until(lambda: len(export_processes()) == 1)
        (pid,) = export_processes()
        assert pid != os.getpid()
        # The fork server has imported the export code; the export process is its fork.
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
            b"-m",
            b"mediaproxy.integrations.export_processes",
        ]
        # Below the gateway's priority (the route's default niceness, 10), once it has its job.
        wanted = os.getpriority(os.PRIO_PROCESS, 0) + 10
        wait_until(lambda: os.getpriority(os.PRIO_PROCESS, pid) == wanted)
        # Bulk work to the kernel: it never preempts the gateway when it wakes ("batch", the
        # default), or it runs only on CPU time nothing else wants ("idle").
        wait_until(lambda: os.sched_getscheduler(pid) == policy)
    finally:
        sock.close()
    wait_until(lambda: not export_processes(), timeout_s=3)


@pytest.mark.parametrize("cut", ["disconnect", "idle timer", "shutdown"])
def test_no_export_process_or_query_outlives_its_request(
    make_gateway, db: ExportDatabase, cut: str
) -> None:  # type: ignore[no-untyped-def]
    """A never-ending query, cut three ways: the process is gone well within the grace after
    which it would be killed (it left by itself), and so is PostgreSQL's query."""
    gateway = make_gateway(f"""
        [[routes]]
        prefix = "/never"
        integration = "csv_export"
        database = "{db.database}"
        query = "{NEVER_ENDS}"
        idle_timeout = 1
    """)
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: len(export_processes()) == 1)
    if db.name == "postgres":
        wait_until(lambda: running_postgres_queries(db.database) == 1)
    if cut == "disconnect":
        sock.close()
    elif cut == "idle timer":
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 504 ")
    else:
        gateway.stop()
    started = time.monotonic()
    wait_until(lambda: not export_processes(), timeout_s=export_processes_module.EXIT_GRACE_S)
    assert time.monotonic() - started < 2.5, "it waited to be killed"
    if db.name == "postgres":
        wait_until(lambda: running_postgres_queries(db.database) == 0, timeout_s=3)
    sock.close()


@pytest.mark.slow
def test_a_thousand_aborted_exports_leave_no_process_or_descriptor(
    gateway: GatewayThread, db: ExportDatabase
) -> None:
    """Cut before the first byte (a query that never answers) and mid-body (a client that
    leaves after the headers), many at once: nothing stays behind in either process."""
    count = 1000 if db.name == "sqlite" else 200  # PostgreSQL's connections are slower
    assert request(gateway.port, "GET", "/items?since=2024-01-01").status == 200  # warm
    wait_until(lambda: not export_processes())
    fds_before = open_fds()
    server = csv_export._fork_server._process
    assert server is not None
    server_fds = len(os.listdir(f"/proc/{server.pid}/fd"))

    def abort(number: int) -> None:
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            path = b"/never" if number % 2 else b"/endless"
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            if path == b"/endless":
                sock.settimeout(10)
                assert sock.recv(12) == b"HTTP/1.1 200"

    with ThreadPoolExecutor(8) as clients:
        list(clients.map(abort, range(count)))
    wait_for_no_streams(gateway)
    wait_until(lambda: not export_processes(), timeout_s=10)
    wait_until(lambda: open_fds() <= fds_before, timeout_s=5)
    assert len(os.listdir(f"/proc/{server.pid}/fd")) == server_fds
    if db.name == "postgres":
        wait_until(lambda: running_postgres_queries(db.database) == 0, timeout_s=5)


def test_a_dead_fork_server_is_replaced(gateway: GatewayThread, db: ExportDatabase) -> None:
    assert request(gateway.port, "GET", "/items?since=2024-01-01").status == 200
    server = csv_export._fork_server._process
    assert server is not None
    server.kill()
    server.wait(5)
    reply = request(gateway.port, "GET", "/items?since=2024-01-01")
    assert reply.body == expected_csv(COLUMNS, ROWS, db)
    assert csv_export._fork_server._process is not server


# --- the arrow engine ------------------------------------------------------------------------


def arrow_database(tmp_path: Path) -> Path:
    """A STRICT table and a plain one with the same rows; a STRICT one whose text column is
    NULL throughout ADBC's first batch (1024 rows) and text after it."""
    path = tmp_path / "typed.sqlite"
    with sqlite3.connect(path) as connection:
        for name, strict in (("typed", " STRICT"), ("loose", "")):
            connection.execute(
                f"CREATE TABLE {name} (id INTEGER, label TEXT, qty INTEGER, "
                f"price REAL, note TEXT){strict}"
            )
            connection.executemany(
                f"INSERT INTO {name} VALUES (?, ?, ?, ?, ?)",
                [
                    (1, "plain", 10, 1.0, None),
                    (2, 'comma, and "quotes"', -3, 0.1, ""),
                    (3, "line\nbreak", 0, 1e16, "=SUM(A1:A9)"),
                    (4, "Zoë", 7, -2.5, "-7"),
                ],
            )
        connection.execute("CREATE TABLE late (id INTEGER, note TEXT) STRICT")
        connection.executemany(
            "INSERT INTO late VALUES (?, ?)",
            [(i, None if i <= 2000 else f"n{i}") for i in range(1, 2011)],
        )
    connection.close()
    return path


@pytest.fixture
def arrow_gateway(make_gateway, tmp_path: Path) -> GatewayThread:  # type: ignore[no-untyped-def]
    pytest.importorskip("adbc_driver_sqlite")
    pytest.importorskip("apsw")
    database = arrow_database(tmp_path)
    routes = {
        "/typed": "SELECT id, label, qty, price, note FROM typed WHERE id >= :since ORDER BY id",
        "/loose": "SELECT id, label, qty, price, note FROM loose WHERE id >= :since ORDER BY id",
        "/expression": "SELECT id, qty * 2 AS double_qty FROM typed WHERE id >= :since",
        "/late": "SELECT id, note FROM late WHERE id >= :since ORDER BY id",
    }
    text = ""
    for prefix, query in routes.items():
        for engine in ("default", "arrow"):
            text += f"""
                [[routes]]
                prefix = "/{engine}{prefix}"
                integration = "csv_export"
                engine = "{engine}"
                database = "{database}"
                query = "{query}"
                params = {{ since = "integer" }}
            """
    text += f"""
        [[routes]]
        prefix = "/escaped"
        integration = "csv_export"
        engine = "arrow"
        database = "{database}"
        query = "SELECT id, label, qty, note FROM typed ORDER BY id"
        escape_formulas = true
    """
    gateway: GatewayThread = make_gateway(text)
    return gateway


def test_the_arrow_engine_writes_strict_tables_as_arrow_formats_them(
    arrow_gateway: GatewayThread,
) -> None:
    reply = request(arrow_gateway.port, "GET", "/arrow/typed?since=1")
    assert reply.status == 200
    # Every string quoted (header too), '' as "" apart from NULL, doubles without a
    # trailing .0; integers as ever.
    assert reply.body == (
        b'"id","label","qty","price","note"\r\n'
        b'1,"plain",10,1,\r\n'
        b'2,"comma, and ""quotes""",-3,0.1,""\r\n'
        b'3,"line\nbreak",0,1e+16,"=SUM(A1:A9)"\r\n'
        b'4,"Zo\xc3\xab",7,-2.5,"-7"\r\n'
    )
    default = request(arrow_gateway.port, "GET", "/default/typed?since=1").body
    parsed = list(csv.reader(io.StringIO(reply.body.decode(), newline="")))
    assert parsed[1] == ["1", "plain", "10", "1", ""]
    assert [row[:3] for row in parsed] == [
        row[:3] for row in csv.reader(io.StringIO(default.decode(), newline=""))
    ]


@pytest.mark.parametrize("route", ["/loose", "/expression", "/late"])
def test_results_without_fixed_types_fall_back_to_the_default_engine(
    arrow_gateway: GatewayThread, route: str
) -> None:
    """A plain table, an expression, a STRICT column NULL throughout ADBC's first batch (it
    would have failed at row 1025): the default engine's bytes, whole."""
    arrow = request(arrow_gateway.port, "GET", f"/arrow{route}?since=1")
    default = request(arrow_gateway.port, "GET", f"/default{route}?since=1")
    assert arrow.status == default.status == 200
    assert arrow.body == default.body


def test_the_arrow_engine_escapes_formulas(arrow_gateway: GatewayThread) -> None:
    reply = request(arrow_gateway.port, "GET", "/escaped")
    assert reply.body == (
        b'"id","label","qty","note"\r\n1,"plain",10,\r\n'
        b'2,"comma, and ""quotes""",-3,""\r\n3,"line\nbreak",0,"\'=SUM(A1:A9)"\r\n'
        b'4,"Zo\xc3\xab",7,"-7"\r\n'
    )
