"""CSV export throughput: mediaproxy's csv_export against the databases' own CSV tools.

Run from the repository root (after `make test` has built .venv):

    .venv/bin/python bench/csv_export.py [--rows 1000000] [--reps 3]

What it does, all on loopback:

1. Builds a --rows orders database with scripts/make_orders_db.py in bench/work/ (kept for
   the next run); notes hold commas, quotes, newlines and non-ASCII text.
2. Starts mediaproxy (its own process) with two SQLite export routes over that file: the
   orders table alone, and orders joined to customers (the default config's query).
3. Downloads each export with curl, --reps times, interleaved with `sqlite3 -csv -header` on
   the same query as the reference; reports first byte (curl's time_starttransfer), rows/s and
   the server's peak RSS (VmHWM: the whole process, over every run).
4. If PostgreSQL's server is installed: a throwaway cluster, the same orders copied in, the
   same exports through psycopg, against `psql -c "\\copy (query) to stdout csv header"`.

Targets (issue 4): first byte < 100 ms, >= 500,000 rows/s, peak RSS < 100 MB.
A benchmark, not a test: the machine is shared and noisy, so it reports medians and spreads,
and rows per CPU-second of the exporting process, which the neighbours disturb far less.

Findings (py-spy on the server, and process_time A/B runs of the batch pipeline alone): the
time is CPython's, ~1 us per row in sqlite3's fetchmany (a tuple and an object per value) and
~1.1 us in csv.writer.writerows, both under the GIL, so a second thread cannot help. Tried and
dropped for making no difference in CPU time: formatting the CSV in SQL (CASE/GLOB/replace per
column: slower, ~410k rows/CPU-s), a list.append sink instead of io.StringIO, islice over the
cursor instead of fetchmany, 20,000-row batches, one batch of read-ahead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
sys.path.insert(0, str(REPO))

from tests.integration.pgcluster import server_binaries, throwaway_cluster  # noqa: E402

ORDERS = "SELECT * FROM orders WHERE ordered_at >= {since}"
JOINED = ("SELECT o.id, o.ordered_at, c.name AS customer, c.email, c.country, o.status, "
          "o.total_cents, o.currency, o.note FROM orders AS o "
          "JOIN customers AS c ON c.id = o.customer_id "
          "WHERE o.ordered_at >= {since} ORDER BY o.ordered_at")
QUERIES = {"orders": ORDERS, "joined": JOINED}
SINCE = "2000-01-01"


@dataclass
class Run:
    first_byte_ms: float
    seconds: float
    bytes: int
    cpu_s: float  # the exporting process's CPU time (user + system)


def build_database(rows: int) -> Path:
    path = WORK / f"orders-{rows}.sqlite"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        print(f"building {path.name} ...", flush=True)
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_orders_db.py"),
                        str(path), "--orders", str(rows)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def mediaproxy(routes: str) -> Iterator[tuple[int, int]]:
    """A mediaproxy process serving ``routes``; yields (port, pid)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bench.toml"
        config.write_text(f"[server]\nport = {port}\n{routes}")
        process = subprocess.Popen([str(REPO / ".venv" / "bin" / "mediaproxy"), "--config",
                                    str(config), "--log-level", "WARNING"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("mediaproxy did not start")
                time.sleep(0.1)
            yield port, process.pid
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def curl_run(url: str, server_pid: int) -> Run:
    cpu_before = cpu_seconds(server_pid)
    out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w",
                          "%{time_starttransfer} %{time_total} %{size_download}", url],
                         check=True, capture_output=True, text=True).stdout.split()
    return Run(float(out[0]) * 1000, float(out[1]), int(out[2]),
               cpu_seconds(server_pid) - cpu_before)


def timed_command(command: list[str]) -> Run:
    """A CSV tool writing to a pipe we drain: first byte and total, like curl's."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    first = process.stdout.read(1)
    first_byte_ms = (time.monotonic() - started) * 1000
    size = len(first)
    while chunk := process.stdout.read(1 << 20):
        size += len(chunk)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed")
    return Run(first_byte_ms, time.monotonic() - started, size, usage.ru_utime + usage.ru_stime)


def row_count(database: Path, query: str) -> int:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        count: int = connection.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]
        return count


def report(label: str, runs: list[Run], rows: int, rss_mib: float | None = None) -> None:
    rates = [rows / run.seconds for run in runs]
    first = [run.first_byte_ms for run in runs]
    per_cpu_s = statistics.median(rows / run.cpu_s for run in runs)
    rss = f"{rss_mib:7.1f}" if rss_mib is not None else "      -"
    print(f"{label:34} {statistics.median(first):8.1f} {statistics.median(rates):>12,.0f}"
          f"  ({min(rates):,.0f}-{max(rates):,.0f})  {per_cpu_s:>12,.0f}  {rss}"
          f"  {runs[0].bytes / 1e6:7.1f}", flush=True)


def header() -> None:
    # rows/CPU-s: rows per second of the exporting process's own CPU time, which the other
    # load on a shared machine disturbs far less than the wall-clock rate.
    print(f"{'export':34} {'first ms':>8} {'rows/s':>12}  {'(min-max)':^21}  {'rows/CPU-s':>12}"
          f"  {'RSS MiB':>7}  {'MB':>7}")


def compare(title: str, database: Path, url: str, placeholder: str,
            reference: Callable[[str, str], list[str]], reps: int) -> None:
    """mediaproxy's export of each query from ``url`` against the ``reference`` command.

    ``reference(name, sql)`` is the command line of the database's own CSV tool.
    """
    routes = "".join(f"""
[[routes]]
prefix = "/{name}"
integration = "csv_export"
database = "{url}"
query = "{query.format(since=placeholder)}"
params = {{ since = "date" }}
""" for name, query in QUERIES.items())
    with mediaproxy(routes) as (port, pid):
        print(f"\n{title}; server RSS at start {peak_rss_mib(pid):.1f} MiB")
        header()
        for name, query in QUERIES.items():
            sql = query.format(since=f"'{SINCE}'")
            rows = row_count(database, sql)
            ours, theirs = [], []
            for _ in range(reps):
                ours.append(curl_run(f"http://127.0.0.1:{port}/{name}?since={SINCE}", pid))
                theirs.append(timed_command(reference(name, sql)))
            report(f"mediaproxy {name} ({rows:,} rows)", ours, rows, peak_rss_mib(pid))
            report(f"{reference(name, sql)[0]} {name}", theirs, rows)


def bench_sqlite(database: Path, reps: int) -> None:
    compare(f"SQLite, {database.name}", database, str(database), ":since",
            lambda name, sql: ["sqlite3", "-csv", "-header", str(database), sql], reps)


def load_postgres(url: str, database: Path) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection, \
            contextlib.closing(sqlite3.connect(database)) as source:
        connection.execute("CREATE TABLE customers (id integer PRIMARY KEY, name text, "
                           "email text, country text, created_at text)")
        connection.execute("CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer, "
                           "ordered_at text, status text, total_cents integer, currency text, "
                           "note text)")
        for table in ("customers", "orders"):
            with connection.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in source.execute(f"SELECT * FROM {table}"):
                    copy.write_row(row)
        connection.execute("CREATE INDEX ON orders (ordered_at)")
        connection.execute("ANALYZE")


def bench_postgres(database: Path, reps: int) -> None:
    bindir = server_binaries()
    if bindir is None or shutil.which("psql") is None:
        print("\nPostgreSQL: server not installed, skipped")
        return
    with throwaway_cluster(bindir) as url:
        print("\nPostgreSQL: loading the same rows ...", flush=True)
        load_postgres(url, database)
        compare("PostgreSQL, the same rows", database, url, "%(since)s::text",
                lambda name, sql: ["psql", url, "-c", f"\\copy ({sql}) to stdout csv header"],
                reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    for tool in ("curl", "sqlite3"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install {tool}")
    database = build_database(args.rows)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    bench_sqlite(database, args.reps)
    if not args.skip_postgres:
        bench_postgres(database, args.reps)


if __name__ == "__main__":
    main()
