"""The s3 route against an http_proxy route to the same store, and against the store itself.

Run from the repository root (``make bench`` runs it after bench/run.py):

    .venv/bin/python bench/s3.py [--quick] [--size-mib N] [--reps N] [--ttfb-reps N]

One moto server (the tests' S3-compatible store, testbed/s3store.py) holds one large
object of random bytes and one small one. Authentication is off in the store, so that the
same object can be fetched three ways: through an ``s3`` route (signed, as it would be
against a real store), through an ``http_proxy`` route to the same bucket path, and directly.
One mediaproxy process serves both routes. Repetitions are interleaved (s3, proxy, direct,
s3, ...), so the machine's noise falls on all three alike; for first bytes the order rotates
each round, because the way that follows a direct GET finds the gateway idle and the store
still closing the previous connection, and pays for it.

    throughput   one curl download of the large object per repetition, MB/s; the target is
                 s3 >= 0.9x http_proxy
    first byte   seconds from sending GET of the small object on a new connection to the
                 first body byte; the target is s3 - direct <= 1 ms (medians)
    slow clients 200 clients reading an 8 MiB object at 256 KiB/s each: the peak RSS of a
                 gateway started afresh for each route (one started before would carry
                 the heap the other left), in MB; the target is s3 <= 64 MB, and about
                 the http_proxy figure

The store itself is slow (moto answers from Python and holds a whole object in memory to
send it), so throughput compares the gateway's two routes, which pay the same store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import procstat  # noqa: E402
import slow_clients  # noqa: E402
from loadgen import curl_download  # noqa: E402
from workspace import REPO, WORK, MiB  # noqa: E402

from testbed.s3store import S3Store, free_port, moto_server  # noqa: E402

MEDIAPROXY_BIN = REPO / ".venv" / "bin" / "mediaproxy"
SMALL_BYTES = 16 * 1024
SLOW_OBJECT_BYTES = 8 * MiB  # more than a slow client reads in the time (the store holds
# a whole object in memory per request, so not the large one)
SLOW_CLIENTS = 200
SLOW_RATE_BYTES_PER_S = 256 * 1024
RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## s3 route (bench/s3.py)"
_HEAD_END = b"\r\n\r\n"


def upload(store: S3Store, key: str, size_bytes: int) -> None:
    """A random object of ``size_bytes``, uploaded in parts from a temporary file."""
    with tempfile.TemporaryFile(dir=WORK) as data:
        remaining = size_bytes
        while remaining:
            piece = min(remaining, 8 * MiB)
            data.write(os.urandom(piece))
            remaining -= piece
        data.seek(0)
        # public-read: the http_proxy route and the direct GETs are not signed.
        store.client().upload_fileobj(data, store.bucket, key, ExtraArgs={"ACL": "public-read"})


def start_gateway(store: S3Store) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = WORK / "s3-bench.toml"
    config.write_text(f"""
[server]
address = "127.0.0.1"
port = {port}
access_log = "off"

[[routes]]
prefix = "/s3"
integration = "s3"
bucket = "{store.bucket}"
endpoint = "{store.url}"
access_key_id_env = "BENCH_S3_KEY"
secret_access_key_env = "BENCH_S3_SECRET"

[[routes]]
prefix = "/proxy"
integration = "http_proxy"
upstream = "{store.url}/{store.bucket}/"
""")
    environment = dict(
        os.environ,
        BENCH_S3_KEY=store.reader.access_key_id,
        BENCH_S3_SECRET=store.reader.secret_access_key,
    )
    process = subprocess.Popen(
        [str(MEDIAPROXY_BIN), "--config", str(config)],
        env=environment,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(WORK / "s3-bench.log", "wb"),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            asyncio.run(first_body_byte_s(port, "/s3/small.bin"))
            return process, port
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise SystemExit(f"mediaproxy did not start; see {WORK / 's3-bench.log'}")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(10)


async def first_body_byte_s(port: int, path: str) -> float:
    """Seconds from sending GET ``path`` on a new connection to the first byte of its body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        sent_at = time.perf_counter()
        writer.write(request.encode())
        head = await reader.readuntil(_HEAD_END)
        if not head.split(b" ", 2)[1] == b"200":
            raise ValueError(f"unexpected answer: {head.splitlines()[0]!r}")
        await reader.readexactly(1)
        first_byte_at = time.perf_counter()
        await reader.read()
        return first_byte_at - sent_at
    finally:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 MiB, 2 reps, 50 first bytes")
    parser.add_argument("--size-mib", type=int, help="the large object (default 1024)")
    parser.add_argument("--reps", type=int, help="downloads per way (default 5)")
    parser.add_argument("--ttfb-reps", type=int, help="first-byte probes per way (default 200)")
    args = parser.parse_args()
    size_bytes = (args.size_mib or (64 if args.quick else 1024)) * MiB
    reps = args.reps or (2 if args.quick else 5)
    ttfb_reps = args.ttfb_reps or (50 if args.quick else 200)
    slow_s = 3.0 if args.quick else 10.0
    full_run = not (args.quick or args.size_mib or args.reps or args.ttfb_reps)
    WORK.mkdir(parents=True, exist_ok=True)

    with moto_server(authenticate=False) as store:
        print(f"uploading {size_bytes // MiB} MiB to the store ...", flush=True)
        upload(store, "large.bin", size_bytes)
        upload(store, "small.bin", SMALL_BYTES)
        upload(store, "slow.bin", SLOW_OBJECT_BYTES)
        process, port = start_gateway(store)
        try:
            ways = {
                "s3": f"http://127.0.0.1:{port}/s3/",
                "http_proxy": f"http://127.0.0.1:{port}/proxy/",
                "direct": f"{store.url}/{store.bucket}/",
            }
            speeds: dict[str, list[float]] = {way: [] for way in ways}
            for rep in range(1, reps + 1):
                for way, base in ways.items():
                    download = curl_download(base + "large.bin", size_bytes, 600)
                    speeds[way].append(download.bytes_per_s / 1e6)
                    print(f"  large rep {rep}/{reps} {way}: {speeds[way][-1]:.0f} MB/s", flush=True)
            paths = {
                "s3": (port, "/s3/small.bin"),
                "http_proxy": (port, "/proxy/small.bin"),
                "direct": (store.port, f"/{store.bucket}/small.bin"),
            }
            firsts: dict[str, list[float]] = {way: [] for way in paths}
            order = list(paths)
            for round_index in range(ttfb_reps):
                shift = round_index % len(order)
                for way in order[shift:] + order[:shift]:
                    way_port, path = paths[way]
                    firsts[way].append(asyncio.run(first_body_byte_s(way_port, path)))
        finally:
            stop(process)
        peak_mb: dict[str, float] = {}
        for way, path in (("s3", "/s3/slow.bin"), ("http_proxy", "/proxy/slow.bin")):
            process, port = start_gateway(store)
            try:
                procstat.reset_group_peak_rss(process.pid)
                outcome = asyncio.run(
                    slow_clients.run_slow_clients(
                        "127.0.0.1", port, path, SLOW_CLIENTS, SLOW_RATE_BYTES_PER_S, slow_s
                    )
                )
                peak_mb[way] = procstat.group_peak_rss_bytes(process.pid) / 1e6
            finally:
                stop(process)
            print(
                f"  slow clients {way}: peak RSS {peak_mb[way]:.1f} MB, "
                f"{outcome.clients_ok}/{SLOW_CLIENTS} ok {'; '.join(outcome.failures())}",
                flush=True,
            )

    median_speed = {way: statistics.median(values) for way, values in speeds.items()}
    median_first_ms = {way: statistics.median(values) * 1e3 for way, values in firsts.items()}
    lines = [
        SECTION,
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
        f"{' '.join(f'{value:.2f}' for value in os.getloadavg())} at the end.",
        f"`.venv/bin/python bench/s3.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        f"{size_bytes // MiB} MiB object, {reps} curl downloads per way; first byte of a "
        f"{SMALL_BYTES // 1024} KiB object, {ttfb_reps} probes per way; {SLOW_CLIENTS} clients "
        f"at {SLOW_RATE_BYTES_PER_S // 1024} KiB/s for {slow_s:.0f} s, a fresh gateway per "
        "route. Medians. The store is moto's server, authentication off so that http_proxy "
        "and direct GETs need no signature (the s3 route signs all the same).",
        "",
        "| way | MB/s | first byte ms | peak RSS MB (slow clients) |",
        "|---|---:|---:|---:|",
    ]
    for way in ways:
        peak = f"{peak_mb[way]:.1f}" if way in peak_mb else ""
        lines.append(f"| {way} | {median_speed[way]:.0f} | {median_first_ms[way]:.2f} | {peak} |")
    lines += [
        "",
        f"- s3 / http_proxy throughput: {median_speed['s3'] / median_speed['http_proxy']:.2f}x "
        f"(target >= 0.9x)",
        f"- first byte added over a direct GET: s3 "
        f"{median_first_ms['s3'] - median_first_ms['direct']:+.2f} ms, http_proxy "
        f"{median_first_ms['http_proxy'] - median_first_ms['direct']:+.2f} ms (target <= 1 ms)",
        f"- slow clients: s3 {peak_mb['s3']:.1f} MB peak RSS (target <= 64 MB), "
        f"{peak_mb['s3'] / peak_mb['http_proxy']:.2f}x http_proxy's {peak_mb['http_proxy']:.1f} MB",
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    (WORK / "s3-results.md").write_text(text)
    if full_run and RESULTS.exists():
        # A full run's figures join bench/run.py's, replacing the previous s3 section.
        recorded = RESULTS.read_text()
        before, _, after = recorded.partition(SECTION)
        rest = after[after.find("\n## ") :] if "\n## " in after else ""
        RESULTS.write_text(before.rstrip("\n") + "\n\n" + text + rest)


if __name__ == "__main__":
    main()
