"""mediaproxy's benchmark suite: mediaproxy against nginx and Tornado, on this machine.

Run from the repository root:

    .venv/bin/python bench/run.py [--quick] [--only SCENARIO ...]

Each scenario starts the servers it compares (each its own process group, on
a free loopback port), repeats its measurement interleaved across them
(A, B, C, A, B, C, ...) so that the machine's noise falls on all alike, and
stops them whatever happens. The table goes to the terminal, and to
bench/RESULTS.md for a full run (bench/work/RESULTS.md for --quick or --only,
so that a smoke run never replaces the recorded figures).
"""

import argparse
import asyncio
import contextlib
import datetime
import functools
import http.client
import importlib.util
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cache as cache_bench
import procstat
import report
import servers
import slow_clients
import ttfb as ttfb_probe
import workspace
from loadgen import LoadFailed, WrkRun, curl_download, run_wrk
from report import Metric, Results
from servers import RunningServer, ServerRecipe
from workspace import REPO, DataFile, GiB, MiB, Workspace

MB_PER_S = Metric("MB/s", higher_is_better=True)
CPU_S_PER_GIB = Metric("CPU s/GiB", higher_is_better=False)
CURL_CPU_S_PER_GIB = Metric("curl CPU s/GiB", higher_is_better=False)
P99_MS = Metric("p99 ms", higher_is_better=False)
REQUESTS_PER_S = Metric("requests/s", higher_is_better=True)
PEAK_RSS_MIB = Metric("peak RSS MiB", higher_is_better=False)
CPU_US_PER_REQUEST = Metric("CPU us/request", higher_is_better=False)
TTFB_MS = Metric("first byte ms", higher_is_better=False)
ADDED_TTFB_MS = Metric("added first byte ms", higher_is_better=False)
CLIENT_KIB_PER_S = Metric("KiB/s per client", higher_is_better=True)
FIRST_BYTE_SPREAD_MS = Metric("first byte spread ms", higher_is_better=False)
ORIGIN_READS = Metric("origin reads of each byte", higher_is_better=False)


@dataclass(frozen=True)
class Settings:
    """How long and how often; --quick trades precision for a run under a minute."""

    big_file_bytes: int
    transfer_reps: int
    wrk_reps: int
    wrk_duration_s: int
    wrk_threads: int
    wrk_connections: int
    slow_reps: int
    slow_clients: int
    slow_client_rate_bytes_per_s: int
    slow_duration_s: float
    ttfb_reps: int

    def describe(self) -> str:
        return (
            f"big file {self.big_file_bytes // MiB} MiB; disk and relay: one curl, "
            f"n = {self.transfer_reps}; concurrency, small, proxy_concurrency and proxy_small: "
            f"`wrk -t{self.wrk_threads} "
            f"-c{self.wrk_connections} -d{self.wrk_duration_s}s --latency`, n = {self.wrk_reps}; "
            f"slow_clients: {self.slow_clients} clients at "
            f"{self.slow_client_rate_bytes_per_s // 1024} KiB/s for {self.slow_duration_s:.0f} s, "
            f"n = {self.slow_reps}; ttfb: one request per server on a fresh connection (the origin "
            f"closes each one, so none comes from a pool), n = {self.ttfb_reps}"
        )


FULL = Settings(
    big_file_bytes=GiB,
    transfer_reps=5,
    wrk_reps=3,
    wrk_duration_s=10,
    wrk_threads=2,
    wrk_connections=32,
    slow_reps=3,
    slow_clients=200,
    slow_client_rate_bytes_per_s=256 * 1024,
    slow_duration_s=12.0,
    ttfb_reps=60,
)
QUICK = Settings(
    big_file_bytes=128 * MiB,
    transfer_reps=2,
    wrk_reps=1,
    wrk_duration_s=2,
    wrk_threads=2,
    wrk_connections=32,
    slow_reps=1,
    slow_clients=200,
    slow_client_rate_bytes_per_s=256 * 1024,
    slow_duration_s=3.0,
    ttfb_reps=10,
)

# A single transfer of 1 GiB takes seconds; this only stops a stuck one.
_TRANSFER_TIMEOUT_S = 300


@dataclass
class Bench:
    workspace: Workspace
    settings: Settings
    results: Results

    @contextlib.contextmanager
    def serving(
        self, scenario: str, recipes: list[ServerRecipe], warm_up: DataFile
    ) -> Iterator[list[RunningServer]]:
        """Start the scenario's servers and send each one untimed request for its file."""
        note = functools.partial(self.results.note, scenario)
        with servers.running_all(recipes, self.workspace, note) as running:
            for server in running:
                _head(server, warm_up.url_path)
            yield running

    def record(
        self, scenario: str, server: str, rep: int, reps: int, values: dict[Metric, float]
    ) -> None:
        for metric, value in values.items():
            self.results.add(scenario, server, metric, value)
        shown = "  ".join(
            f"{metric.name} {report.format_number(value)}" for metric, value in values.items()
        )
        print(f"  {scenario} rep {rep}/{reps} {server}: {shown}", flush=True)


def interleaved(running: list[RunningServer], reps: int) -> Iterator[tuple[int, RunningServer]]:
    """Yield (repetition, server) as A, B, C, A, B, C, ... so noise is shared fairly."""
    for rep in range(1, reps + 1):
        for server in running:
            yield rep, server


# -- scenarios ------------------------------------------------------------------


def disk(bench: Bench) -> None:
    """One client fetching the big page-cached file: the ceiling of a single stream, and its CPU."""
    recipes = [
        servers.nginx_static(),
        servers.tornado_static(),
        servers.mediaproxy_files(),
        servers.mediaproxy_files("mediaproxy-asyncio", event_loop="asyncio"),
    ]
    with bench.serving("disk", recipes, bench.workspace.big) as running:
        _measure_downloads(bench, "disk", running)


def relay(bench: Bench) -> None:
    """The same transfer through a proxy in front of an nginx origin.

    Only the proxy is measured; the origin is shared infrastructure. mediaproxy
    is skipped with a note until it has its http_proxy integration.
    """
    with servers.running(servers.nginx_origin(), bench.workspace) as origin:
        recipes = [
            servers.nginx_proxy(origin.port),
            servers.mediaproxy_relay(origin.port),
            servers.mediaproxy_relay(origin.port, "mediaproxy-asyncio", "asyncio"),
        ]
        with bench.serving("relay", recipes, bench.workspace.big) as running:
            _measure_downloads(bench, "relay", running)


def concurrency(bench: Bench) -> None:
    """32 connections fetching a 4 MiB file back to back: throughput and tail latency."""
    recipes = [
        servers.nginx_static(),
        servers.nginx_static("nginx-auto", "auto"),
        servers.tornado_static(),
        servers.mediaproxy_files(),
    ]
    _wrk_scenario(
        bench,
        "concurrency",
        recipes,
        bench.workspace.medium,
        lambda wrk, cpu_s: {
            MB_PER_S: wrk.bytes_per_s / 1e6,
            P99_MS: wrk.p99_s * 1e3,
            CPU_S_PER_GIB: cpu_s / (wrk.bytes_read / GiB),
        },
    )
    _note_ratios_to(bench, "concurrency", "nginx", MB_PER_S)


def small(bench: Bench) -> None:
    """Requests for a 4 KiB file: the per-request overhead, where Python pays most.

    mediaproxy-2proc asks for `processes = 2`; it is skipped with a note if mediaproxy
    starts fewer processes. The target here is a
    ratio to Tornado's StaticFileHandler, so a note gives each mediaproxy's.
    """
    recipes = [
        servers.nginx_static(),
        servers.nginx_static("nginx-auto", "auto"),
        servers.tornado_static(),
        servers.mediaproxy_files(),
        servers.mediaproxy_files("mediaproxy-asyncio", event_loop="asyncio"),
        servers.mediaproxy_files("mediaproxy-2proc", processes=2),
    ]
    _wrk_scenario(
        bench,
        "small",
        recipes,
        bench.workspace.small,
        lambda wrk, cpu_s: {
            REQUESTS_PER_S: wrk.requests_per_s,
            P99_MS: wrk.p99_s * 1e3,
            CPU_US_PER_REQUEST: cpu_s / wrk.requests * 1e6,
        },
    )
    _note_ratios_to(bench, "small", "tornado", REQUESTS_PER_S)


def slow_clients_scenario(bench: Bench) -> None:
    """Many slow readers of the big file: the memory a server holds for them.

    From disk ("slow_clients") and through a proxy in front of an nginx origin
    ("slow_clients_proxy"), where the proxy must not read the origin faster than the
    clients drain it.
    """
    recipes = [servers.nginx_static(), servers.tornado_static(), servers.mediaproxy_files()]
    with bench.serving("slow_clients", recipes, bench.workspace.big) as running:
        _measure_slow_clients(bench, "slow_clients", running)
    with servers.running(servers.nginx_origin(), bench.workspace) as origin:
        recipes = [servers.nginx_proxy(origin.port), servers.mediaproxy_relay(origin.port)]
        with bench.serving("slow_clients_proxy", recipes, bench.workspace.big) as running:
            _measure_slow_clients(bench, "slow_clients_proxy", running)


def _measure_slow_clients(bench: Bench, scenario: str, running: list[RunningServer]) -> None:
    settings = bench.settings
    for rep, server in interleaved(running, settings.slow_reps):
        procstat.reset_group_peak_rss(server.pgid)
        outcome = asyncio.run(
            slow_clients.run_slow_clients(
                "127.0.0.1",
                server.port,
                bench.workspace.big.url_path,
                settings.slow_clients,
                settings.slow_client_rate_bytes_per_s,
                settings.slow_duration_s,
            )
        )
        peak_rss_bytes = procstat.group_peak_rss_bytes(server.pgid)
        if outcome.clients_ok < settings.slow_clients:
            bench.results.note(
                scenario, f"{server.name} rep {rep}: {'; '.join(outcome.failures())}"
            )
        bench.record(
            scenario,
            server.name,
            rep,
            settings.slow_reps,
            {
                PEAK_RSS_MIB: peak_rss_bytes / MiB,
                CLIENT_KIB_PER_S: outcome.client_bytes_per_s / 1024,
            },
        )


def proxy_concurrency(bench: Bench) -> None:
    """32 connections fetching a 4 MiB file through each proxy in front of one nginx origin."""
    _proxy_wrk_scenario(
        bench,
        "proxy_concurrency",
        bench.workspace.medium,
        lambda wrk, cpu_s: {
            MB_PER_S: wrk.bytes_per_s / 1e6,
            P99_MS: wrk.p99_s * 1e3,
            CPU_S_PER_GIB: cpu_s / (wrk.bytes_read / GiB),
        },
    )
    _note_ratios_to(bench, "proxy_concurrency", "nginx", MB_PER_S)
    _note_ratios_to(bench, "proxy_concurrency", "aiohttp", MB_PER_S)


def proxy_small(bench: Bench) -> None:
    """32 connections asking for a 4 KiB file through each proxy: the per-request cost."""
    _proxy_wrk_scenario(
        bench,
        "proxy_small",
        bench.workspace.small,
        lambda wrk, cpu_s: {
            REQUESTS_PER_S: wrk.requests_per_s,
            P99_MS: wrk.p99_s * 1e3,
            CPU_US_PER_REQUEST: cpu_s / wrk.requests * 1e6,
        },
    )
    _note_ratios_to(bench, "proxy_small", "aiohttp", REQUESTS_PER_S)


def _proxy_wrk_scenario(
    bench: Bench,
    scenario: str,
    data_file: DataFile,
    figures: Callable[[WrkRun, float], dict[Metric, float]],
) -> None:
    """wrk through nginx proxy_pass, the aiohttp peer, the naive Tornado proxy and mediaproxy.

    The origin is one nginx serving the same files; only the proxy's CPU is counted.
    """
    with servers.running(servers.nginx_origin(), bench.workspace) as origin:
        _wrk_scenario(bench, scenario, _proxy_recipes(origin.port), data_file, figures)


def _proxy_recipes(origin_port: int) -> list[ServerRecipe]:
    return [
        servers.nginx_proxy(origin_port),
        servers.aiohttp_proxy(origin_port),
        servers.tornado_proxy(origin_port),
        servers.mediaproxy_relay(origin_port),
    ]


def ttfb(bench: Bench) -> None:
    """The time to first body byte a proxy adds in front of an origin that streams as it goes.

    Each repetition asks the origin directly and then each proxy (bench/ttfb.py), every time on
    a fresh client connection; the origin closes every connection after its answer, so no
    proxy can take its origin connection from a pool. "added" is a proxy's time minus the
    direct one of the same repetition.
    """
    reps = bench.settings.ttfb_reps
    with servers.running(servers.ttfb_origin(), bench.workspace) as origin:
        with bench.serving("ttfb", _proxy_recipes(origin.port), bench.workspace.small) as proxies:
            path = bench.workspace.small.url_path
            for rep in range(1, reps + 1):
                direct_s = ttfb_probe.measure(origin.port, path)
                bench.record("ttfb", "origin", rep, reps, {TTFB_MS: direct_s * 1e3})
                for proxy in proxies:
                    via_s = ttfb_probe.measure(proxy.port, path)
                    bench.record(
                        "ttfb",
                        proxy.name,
                        rep,
                        reps,
                        {
                            TTFB_MS: via_s * 1e3,
                            ADDED_TTFB_MS: (via_s - direct_s) * 1e3,
                        },
                    )
    added = bench.results.medians("ttfb", ADDED_TTFB_MS)
    for proxy in proxies:
        bench.results.note(
            "ttfb",
            f"{proxy.name} adds {added[proxy.name]:.3f} ms (median over "
            f"{reps} of its first byte minus the origin's in the same repetition)",
        )


def csv_export(bench: Bench) -> None:
    """CSV exports against the databases' own tools, concurrency, and the small-file service
    while exports run: bench/csv_export.py (its own databases and servers), whose closing
    ratios become this scenario's notes. --quick exports 200,000 rows once."""
    quick = bench.settings is QUICK
    command = [
        sys.executable,
        str(REPO / "bench" / "csv_export.py"),
        "--rows",
        "200000" if quick else "1000000",
        "--reps",
        "1" if quick else "3",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    print(completed.stdout, end="", flush=True)
    if completed.returncode != 0:
        bench.results.note("csv_export", f"failed: {completed.stderr.strip()[-500:]}")
        return
    bench.results.note("csv_export", f"`{shlex.join([_from_repo(part) for part in command])}`")
    for line in completed.stdout.splitlines():
        if line.startswith(("  ratio ", "  first byte ", "mediaproxy ")):
            bench.results.note("csv_export", line.strip())


def cache_hit(bench: Bench) -> None:
    """The http_proxy cache: the big file from cache hits against nginx serving it from disk
    (one curl each, interleaved; mediaproxy's cache filled by one untimed download first),
    then the cold fill: 50 clients at once of an uncached 100 MiB object, and 50 again of the
    same object from the cache (bench/cache.py)."""
    with servers.running(servers.nginx_origin(), bench.workspace) as origin:
        recipes = [servers.nginx_static(), servers.mediaproxy_cached(origin.port)]
        with bench.serving("cache_hit", recipes, bench.workspace.big) as running:
            big = bench.workspace.big
            cached = running[-1]
            curl_download(cached.url(big.url_path), big.size_bytes, _TRANSFER_TIMEOUT_S)
            _measure_downloads(bench, "cache_hit", running)
    _note_ratios_to(bench, "cache_hit", "nginx", MB_PER_S)
    reps = bench.settings.transfer_reps
    size = min(100 * MiB, bench.settings.big_file_bytes)
    identical = []
    with cache_bench.test_origin() as origin_port:
        # Below /bytes/ every name is an object of the size its query asks for (n=0: empty),
        # so the start-up check's small file is found too.
        recipe = servers.mediaproxy_cached(origin_port, "mediaproxy-cache-cold", "/bytes/")
        with servers.running(recipe, bench.workspace) as gateway:
            for rep in range(1, reps + 1):
                name = f"cold-{rep}.bin"  # a new object each repetition: cold, then cached
                for scenario in ("cache_cold_fill", "cache_hits_at_once"):
                    batch = cache_bench.at_once(gateway.port, origin_port, name, size, clients=50)
                    bench.record(
                        scenario,
                        "mediaproxy-cache",
                        rep,
                        reps,
                        {
                            FIRST_BYTE_SPREAD_MS: batch.first_byte_spread_s * 1e3,
                            ORIGIN_READS: batch.origin_bytes / batch.size_bytes,
                            MB_PER_S: batch.clients * batch.size_bytes / batch.wall_s / 1e6,
                        },
                    )
                    identical.append(batch.identical)
    bench.results.note(
        "cache_cold_fill",
        f"50 clients x {size // MiB} MiB of a new object, n = {reps}; identical bytes in every "
        f"repetition: {all(identical)}; MB/s is all clients together; the origin is its own "
        "process",
    )
    bench.results.note(
        "cache_hits_at_once",
        "the same 50 clients again, each repetition's object now cached: first bytes while "
        "other responses stream",
    )


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "disk": disk,
    "relay": relay,
    "concurrency": concurrency,
    "small": small,
    "proxy_concurrency": proxy_concurrency,
    "proxy_small": proxy_small,
    "slow_clients": slow_clients_scenario,
    "ttfb": ttfb,
    "csv_export": csv_export,
    "cache_hit": cache_hit,
}


def _measure_downloads(bench: Bench, scenario: str, running: list[RunningServer]) -> None:
    """curl the big file from each server in turn: MB/s, and the server's and curl's CPU per GiB."""
    big = bench.workspace.big
    reps = bench.settings.transfer_reps
    for rep, server in interleaved(running, reps):
        cpu_before_s = procstat.group_cpu_s(server.pgid)
        try:
            download = curl_download(server.url(big.url_path), big.size_bytes, _TRANSFER_TIMEOUT_S)
        except LoadFailed as failure:
            bench.results.note(scenario, f"{server.name} rep {rep} failed: {failure}")
            continue
        cpu_s = procstat.group_cpu_s(server.pgid) - cpu_before_s
        bench.record(
            scenario,
            server.name,
            rep,
            reps,
            {
                MB_PER_S: download.bytes_per_s / 1e6,
                CPU_S_PER_GIB: cpu_s / (download.size_bytes / GiB),
                CURL_CPU_S_PER_GIB: download.client_cpu_s / (download.size_bytes / GiB),
            },
        )


def _wrk_scenario(
    bench: Bench,
    scenario: str,
    recipes: list[ServerRecipe],
    data_file: DataFile,
    figures: Callable[[WrkRun, float], dict[Metric, float]],
) -> None:
    """Repeated wrk runs against each server, interleaved; ``figures`` from (wrk, CPU s)."""
    with bench.serving(scenario, recipes, data_file) as running:
        for rep, server in interleaved(running, bench.settings.wrk_reps):
            run = _wrk_with_cpu(bench, scenario, server, data_file)
            if run is not None:
                bench.record(scenario, server.name, rep, bench.settings.wrk_reps, figures(*run))


def _wrk_with_cpu(
    bench: Bench, scenario: str, server: RunningServer, data_file: DataFile
) -> tuple[WrkRun, float] | None:
    """Run wrk against one server; return (wrk's figures, server CPU s), or None if unusable.

    Non-2xx answers make a run worthless (they are not the file); socket
    errors are noted but the run is kept.
    """
    settings = bench.settings
    cpu_before_s = procstat.group_cpu_s(server.pgid)
    try:
        wrk = run_wrk(
            server.url(data_file.url_path),
            settings.wrk_threads,
            settings.wrk_connections,
            settings.wrk_duration_s,
        )
    except LoadFailed as failure:
        bench.results.note(scenario, f"{server.name} failed: {failure}")
        return None
    cpu_s = procstat.group_cpu_s(server.pgid) - cpu_before_s
    if wrk.errors:
        bench.results.note(scenario, f"{server.name}: {'; '.join(wrk.errors)}")
    if any(error.startswith("Non-2xx") for error in wrk.errors):
        return None
    return wrk, cpu_s


def _note_ratios_to(bench: Bench, scenario: str, reference: str, metric: Metric) -> None:
    """Note each mediaproxy's median over `reference`'s, where a target is set against it."""
    medians = bench.results.medians(scenario, metric)
    if reference not in medians:
        return
    for server, median in medians.items():
        if server.startswith("mediaproxy"):
            bench.results.note(
                scenario, f"{server} / {reference} {metric.name}: {median / medians[reference]:.2f}"
            )


def _head(server: RunningServer, path: str) -> None:
    """One untimed request, so that no server's first-use cost lands in a timed repetition."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("HEAD", path)
        connection.getresponse().read()
    finally:
        connection.close()


# -- entry point ------------------------------------------------------------------


def main() -> None:
    args = _parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _ensure_tools()
    settings = QUICK if args.quick else FULL
    chosen = args.only or list(SCENARIOS)
    output = args.output or _default_output(partial_run=args.quick or bool(args.only))
    command = shlex.join([_from_repo(sys.executable), _from_repo(sys.argv[0]), *sys.argv[1:]])

    print(f"preparing data in {_from_repo(str(workspace.WORK))}", flush=True)
    bench = Bench(workspace.prepare(settings.big_file_bytes), settings, Results())
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = report.load_average()
    for name in chosen:
        print(f"{name}:", flush=True)
        SCENARIOS[name](bench)
    load_after = report.load_average()

    rows = bench.results.rows()
    print()
    print(report.text_table(rows))
    report.write_markdown(
        output,
        date=date,
        machine=report.describe_machine(),
        command=command,
        settings=settings.describe(),
        load_before=load_before,
        load_after=load_after,
        rows=rows,
        notes=bench.results.notes,
    )
    print(f"\nwritten to {_from_repo(str(output))}; reproduce with: {command}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer, shorter repetitions and a 128 MiB big file: a smoke run",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"run only these, in this order: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--output", type=Path, help="where to write the Markdown report")
    return parser.parse_args()


def _default_output(partial_run: bool) -> Path:
    """Only a full run replaces the recorded bench/RESULTS.md."""
    return (workspace.WORK if partial_run else REPO / "bench") / "RESULTS.md"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into an exception, so that the finally blocks stop every server."""
    raise SystemExit(128 + signum)


def _ensure_tools() -> None:
    """Install nginx, wrk, curl and the bench extra through bench/setup.sh if any is missing."""
    if (
        not all(shutil.which(tool) for tool in ("nginx", "wrk", "curl"))
        or importlib.util.find_spec("aiohttp") is None
    ):
        subprocess.run(["bash", str(REPO / "bench" / "setup.sh")], check=True)


def _from_repo(path: str) -> str:
    """A path as written from the repository root, for a command that can be pasted."""
    absolute = Path(path).absolute()
    return str(absolute.relative_to(REPO)) if absolute.is_relative_to(REPO) else path


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Every server was stopped on the way out; a traceback would only hide that.
        sys.exit("interrupted: servers stopped, nothing written")
