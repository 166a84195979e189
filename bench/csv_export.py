"""CSV export throughput: mediaproxy's csv_export against the databases' own CSV tools.

Run from the repository root (after `make test` has built .venv); `make bench` runs it too:

    .venv/bin/python bench/csv_export.py [--rows 1000000] [--reps 3] [--skip-postgres]
                                         [--niceness 10]

One mediaproxy process serves every route, all on loopback, and everything below is measured
in one run, so that the ratios compare like with like on a shared, noisy machine:

1. SQLite: a --rows orders database (scripts/make_orders_db.py, kept in bench/work/), exported
   by curl through the default engine and the `arrow` engine (when its extra is installed),
   interleaved with `sqlite3 -csv -header` on the same query.
2. PostgreSQL (when its server is installed): a throwaway cluster holding the same rows,
   exported through mediaproxy, interleaved with `psql -c "\\copy (query) to stdout csv
   header"`.
3. Concurrency: one, two and four exports at once; rows/s together.
4. The same gateway's small-file service (`wrk` on a 4 KiB file) idle, and while two exports
   run back to back: requests/s and p99; the exports at the routes' default scheduling, then
   with `scheduling = "idle"`.

Reported per export: first byte (curl's time_starttransfer), rows/s (median and range), the
peak RSS of the export's own process (VmHWM, which counts the pages it still shares with the
fork server it was forked from, and the largest PSS seen, which shares them out), and the
gateway's own CPU time per export (relaying only: the rows are the export process's). Then the
CPU each party spent per export (the export process, sampled from /proc while it runs; the
gateway; curl; PostgreSQL's server processes) against the reference tool's and its server's,
and what that allows two exports at once on two cores: at most twice one export's time over
its CPU. The closing "ratios" block is what the targets in bench/TARGETS.md are checked
against.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from loadgen import run_wrk  # noqa: E402

from testbed.pgcluster import server_binaries, throwaway_cluster  # noqa: E402

ORDERS = "SELECT * FROM orders WHERE ordered_at >= {since}"
SINCE = "2000-01-01"
SMALL_FILE_BYTES = 4 * 1024
WRK_SECONDS = 5


@dataclass
class Run:
    first_byte_ms: float
    seconds: float
    bytes: int


@dataclass
class Series:
    """Runs of one export, or of one reference command."""

    label: str
    rows: int
    runs: list[Run] = field(default_factory=list)

    def rows_per_s(self) -> float:
        return statistics.median(self.rows / run.seconds for run in self.runs)

    def report(self, rss: str = "") -> None:
        rates = [self.rows / run.seconds for run in self.runs]
        first = statistics.median(run.first_byte_ms for run in self.runs)
        print(
            f"{self.label:40} {first:8.1f} {statistics.median(rates):>12,.0f}"
            f"  ({min(rates):,.0f}-{max(rates):,.0f})  {rss}",
            flush=True,
        )


def build_database(rows: int) -> Path:
    path = WORK / f"orders-{rows}-strict.sqlite"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        print(f"building {path.name} ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "make_orders_db.py"),
                str(path),
                "--orders",
                str(rows),
            ],
            check=True,
        )
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
        config.write_text(f'[server]\nport = {port}\naccess_log = "off"\n{routes}')
        process = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "mediaproxy"),
                "--config",
                str(config),
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=1),
                ):
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("mediaproxy did not start")
                time.sleep(0.1)
            yield port, process.pid
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


class ExportMemory:
    """Samples the export processes (the fork server's children) while it runs: the peak
    VmHWM and the peak PSS of any one of them."""

    def __init__(self, gateway_pid: int) -> None:
        self._gateway_pid = gateway_pid
        self.peak_hwm_kib = 0
        self.peak_pss_kib = 0
        self.cpu_s: dict[int, float] = {}  # each export process's CPU time, last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ExportMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in _children(self._gateway_pid):
                for export in _children(pid):
                    with contextlib.suppress(OSError, ValueError):
                        self.cpu_s[export] = cpu_seconds(export)
                        self.peak_hwm_kib = max(self.peak_hwm_kib, _status_kib(export, "VmHWM"))
                        self.peak_pss_kib = max(self.peak_pss_kib, _pss_kib(export))

    def describe(self) -> str:
        return (
            f"export process peak RSS {self.peak_hwm_kib / 1024:.1f} MiB "
            f"(PSS {self.peak_pss_kib / 1024:.1f} MiB)"
        )


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """The process's own CPU time (user + system), and its reaped children's if asked."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's waited-for children (curl, psql, sqlite3)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu(url: str) -> Callable[[], float]:
    """A reading of the cluster's CPU time so far: the postmaster's, its exited backends' (it
    reaps them) and its live processes'."""
    data = Path(url.split("host=", 1)[1].split("&", 1)[0]) / "data"

    def read() -> float:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        total = cpu_seconds(postmaster, reaped_children=True)
        for child in _children(postmaster):
            with contextlib.suppress(OSError):
                total += cpu_seconds(child)
        return total

    return read


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                pids += [
                    int(child)
                    for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return pids


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def curl_run(url: str) -> Run:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return Run(float(out[0]) * 1000, float(out[1]), int(out[2]))


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
    if process.wait() != 0:
        raise RuntimeError(f"{command[0]} failed")
    return Run(first_byte_ms, time.monotonic() - started, size)


def concurrent_rows_per_s(url: str, count: int, rows: int) -> float:
    """``count`` exports of ``url`` started together: their rows per second, together."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(subprocess.Popen(["curl", "-sS", "--fail", "-o", "/dev/null", url]))
            for _ in range(count)
        ]
        for process in processes:
            if process.wait() != 0:
                raise RuntimeError(f"curl {url} failed")
    return count * rows / (time.monotonic() - started)


@contextlib.contextmanager
def exports_running(url: str, count: int) -> Iterator[None]:
    """``count`` exports of ``url`` back to back, each restarted as it ends, until exit."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            subprocess.run(["curl", "-sS", "-o", "/dev/null", url], check=False)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every export under way
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def load_postgres(url: str, database: Path) -> None:
    import psycopg

    with (
        psycopg.connect(url, autocommit=True) as connection,
        contextlib.closing(sqlite3.connect(database)) as source,
    ):
        connection.execute(
            "CREATE TABLE customers (id integer PRIMARY KEY, name text, "
            "email text, country text, created_at text)"
        )
        connection.execute(
            "CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer, "
            "ordered_at text, status text, total_cents integer, currency text, "
            "note text)"
        )
        for table in ("customers", "orders"):
            with connection.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in source.execute(f"SELECT * FROM {table}"):
                    copy.write_row(row)
        connection.execute("CREATE INDEX ON orders (ordered_at)")
        connection.execute("ANALYZE")


def arrow_installed() -> bool:
    probe = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", "import adbc_driver_sqlite, pyarrow"],
        capture_output=True,
    )
    return probe.returncode == 0


def routes(
    database: Path, postgres_url: str | None, files: Path, arrow: bool, niceness: int
) -> str:
    text = f"""
[[routes]]
prefix = "/files"
integration = "file"
root = "{files}"
[[routes]]
prefix = "/sqlite"
integration = "csv_export"
database = "{database}"
query = "{ORDERS.format(since=":since")}"
params = {{ since = "date" }}
niceness = {niceness}
[[routes]]
prefix = "/sqlite-idle"
integration = "csv_export"
database = "{database}"
query = "{ORDERS.format(since=":since")}"
params = {{ since = "date" }}
scheduling = "idle"
"""
    if arrow:
        text += f"""
[[routes]]
prefix = "/sqlite-arrow"
integration = "csv_export"
engine = "arrow"
database = "{database}"
query = "{ORDERS.format(since=":since")}"
params = {{ since = "date" }}
niceness = {niceness}
"""
    if postgres_url is not None:
        text += f"""
[[routes]]
prefix = "/postgres"
integration = "csv_export"
database = "{postgres_url}"
query = "{ORDERS.format(since="%(since)s::text")}"
params = {{ since = "date" }}
niceness = {niceness}
"""
    return text


def header() -> None:
    print(f"{'export':40} {'first ms':>8} {'rows/s':>12}  {'(min-max)':^21}  export memory")


def measure_single(
    label: str,
    url: str,
    reference: tuple[str, list[str]],
    rows: int,
    reps: int,
    gateway_pid: int,
    ratios: dict[str, float],
    first_bytes: dict[str, float],
    server_cpu: Callable[[], float] | None = None,
) -> None:
    """The export interleaved with the database's own tool; one ratio. With ``server_cpu``
    (a database server's CPU time so far), the CPU each party spent per export."""
    ours, theirs = Series(f"mediaproxy {label}", rows), Series(reference[0], rows)
    ours_cpu = {"gateway": 0.0, "curl": 0.0, "server": 0.0}
    theirs_cpu = {"tool": 0.0, "server": 0.0}
    with ExportMemory(gateway_pid) as memory:
        for _ in range(reps):
            gateway, client = cpu_seconds(gateway_pid), children_cpu_seconds()
            server = server_cpu() if server_cpu else 0.0
            ours.runs.append(curl_run(url))
            ours_cpu["gateway"] += cpu_seconds(gateway_pid) - gateway
            ours_cpu["curl"] += children_cpu_seconds() - client
            ours_cpu["server"] += (server_cpu() - server) if server_cpu else 0.0
            client, server = children_cpu_seconds(), server_cpu() if server_cpu else 0.0
            theirs.runs.append(timed_command(reference[1]))
            theirs_cpu["tool"] += children_cpu_seconds() - client
            theirs_cpu["server"] += (server_cpu() - server) if server_cpu else 0.0
    export_cpu = sum(memory.cpu_s.values()) / reps
    ours.report(f"{memory.describe()}; gateway CPU {ours_cpu['gateway'] / reps:.2f} s per export")
    theirs.report()
    # Where the CPU goes, per export: two at once on two cores cannot beat one by more than
    # twice one's time over one's CPU (each needs its CPU again, and the cores give two
    # seconds of CPU per second).
    parts = {"export process": export_cpu, **{k: v / reps for k, v in ours_cpu.items()}}
    if server_cpu is None:
        del parts["server"]
    total = sum(parts.values())
    one_s = statistics.median(run.seconds for run in ours.runs)
    print(
        f"  CPU per export: {', '.join(f'{k} {v:.2f} s' for k, v in parts.items())}; "
        f"total {total:.2f} s in {one_s:.2f} s: two at once at most {2 * one_s / total:.2f}x one",
        flush=True,
    )
    tool = f"{reference[0]} {theirs_cpu['tool'] / reps:.2f} s"
    if server_cpu is not None:
        tool += f", server {theirs_cpu['server'] / reps:.2f} s"
    print(f"  CPU per {reference[0]} run: {tool}", flush=True)
    ratios[f"{label} / {reference[0]}"] = ours.rows_per_s() / theirs.rows_per_s()
    first_bytes[label] = statistics.median(run.first_byte_ms for run in ours.runs)


def measure_concurrency(
    label: str, url: str, rows: int, reps: int, ratios: dict[str, float]
) -> None:
    together: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for _ in range(reps):
        for count in together:
            together[count].append(concurrent_rows_per_s(url, count, rows))
    one = statistics.median(together[1])
    for count, rates in together.items():
        print(
            f"{label} x{count} at once: {statistics.median(rates):,.0f} rows/s together "
            f"({min(rates):,.0f}-{max(rates):,.0f})",
            flush=True,
        )
        if count > 1:
            ratios[f"{label}: {count} at once / one"] = statistics.median(rates) / one


def measure_small_files(
    port: int, exports: dict[str, str], reps: int, ratios: dict[str, float]
) -> None:
    """wrk on a small file idle, then while two exports of each of ``exports`` (label: URL)
    run: requests/s and p99, each against idle."""
    url = f"http://127.0.0.1:{port}/files/small.bin"
    runs: dict[str, list[tuple[float, float]]] = {"idle": []}
    for _ in range(reps):
        run = run_wrk(url, 1, 8, WRK_SECONDS)
        runs["idle"].append((run.requests_per_s, run.p99_s * 1e3))
        for label, export_url in exports.items():
            with exports_running(export_url, 2):
                run = run_wrk(url, 1, 8, WRK_SECONDS)
            runs.setdefault(label, []).append((run.requests_per_s, run.p99_s * 1e3))
    medians = {
        name: (statistics.median(r for r, _ in taken), statistics.median(p for _, p in taken))
        for name, taken in runs.items()
    }
    for name, (requests_per_s, p99_ms) in medians.items():
        print(
            f"small files, {name}: {requests_per_s:,.0f} requests/s, p99 {p99_ms:.2f} ms",
            flush=True,
        )
    idle_requests_per_s, idle_p99_ms = medians.pop("idle")
    for name, (requests_per_s, p99_ms) in medians.items():
        ratios[f"small files requests/s: {name} / idle"] = requests_per_s / idle_requests_per_s
        ratios[f"small files p99: {name} / idle"] = p99_ms / idle_p99_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--niceness",
        type=int,
        default=10,
        help="the export routes' niceness (mediaproxy's default: 10)",
    )
    args = parser.parse_args()
    for tool in ("curl", "sqlite3", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install {tool}")
    database = build_database(args.rows)
    sql = ORDERS.format(since=f"'{SINCE}'")
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows: int = connection.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    bindir = server_binaries()
    with_postgres = not args.skip_postgres and bindir is not None and shutil.which("psql")
    arrow = arrow_installed()
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {rows:,} rows; "
        f"exports at niceness {args.niceness}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        postgres_url = None
        if with_postgres:
            assert bindir is not None
            postgres_url = stack.enter_context(throwaway_cluster(bindir))
            print("PostgreSQL: loading the same rows ...", flush=True)
            load_postgres(postgres_url, database)
        files = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (files / "small.bin").write_bytes(os.urandom(SMALL_FILE_BYTES))
        port, pid = stack.enter_context(
            mediaproxy(routes(database, postgres_url, files, arrow, args.niceness))
        )
        base = f"http://127.0.0.1:{port}"
        query = f"?since={SINCE}"
        ratios: dict[str, float] = {}
        first_bytes: dict[str, float] = {}
        # One empty export per route first: the first byte measured is a running gateway's,
        # not that of a fork server still importing at start-up.
        for route in (
            "sqlite",
            "sqlite-arrow" if arrow else None,
            "postgres" if postgres_url else None,
        ):
            if route is not None:
                curl_run(f"{base}/{route}?since=2999-01-01")
        header()
        sqlite_cli = ("sqlite3 -csv", ["sqlite3", "-csv", "-header", str(database), sql])
        measure_single(
            "SQLite", f"{base}/sqlite{query}", sqlite_cli, rows, args.reps, pid, ratios, first_bytes
        )
        if arrow:
            measure_single(
                "SQLite arrow",
                f"{base}/sqlite-arrow{query}",
                sqlite_cli,
                rows,
                args.reps,
                pid,
                ratios,
                first_bytes,
            )
        else:
            print("SQLite arrow: adbc-driver-sqlite and pyarrow not installed, skipped")
        if postgres_url is not None:
            measure_single(
                "PostgreSQL",
                f"{base}/postgres{query}",
                (
                    "psql \\copy",
                    ["psql", postgres_url, "-c", f"\\copy ({sql}) to stdout csv header"],
                ),
                rows,
                args.reps,
                pid,
                ratios,
                first_bytes,
                postgres_cpu(postgres_url),
            )
        else:
            print("PostgreSQL: server not installed (or --skip-postgres), skipped")
        measure_concurrency("SQLite", f"{base}/sqlite{query}", rows, args.reps, ratios)
        if postgres_url is not None:
            measure_concurrency("PostgreSQL", f"{base}/postgres{query}", rows, args.reps, ratios)
        measure_small_files(
            port,
            {
                "two exports running": f"{base}/sqlite{query}",
                'two exports running, scheduling = "idle"': f"{base}/sqlite-idle{query}",
            },
            args.reps,
            ratios,
        )
    print("\nratios (one run):")
    for name, ratio in ratios.items():
        print(f"  ratio {name}: {ratio:.2f}")
    for name, milliseconds in first_bytes.items():
        print(f"  first byte {name}: {milliseconds:.1f} ms")


if __name__ == "__main__":
    main()
