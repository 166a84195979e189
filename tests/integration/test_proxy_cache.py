"""The http_proxy route's disk cache against a real origin that logs what it sent: hits,
misses, ranges across slice edges, multipart, revalidation (304 and a new ETag), bypasses,
eviction at the bound, and one origin read shared by concurrent clients."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediaproxy.server.workers import MIN_UPTIME_S
from testbed.clients import first_bytes_at_once
from testbed.origin import OriginThread, pattern
from testbed.s3store import S3Store

from .support import (
    GatewayThread,
    MakeGateway,
    Response,
    Server,
    closed_port,
    open_fds,
    read_access_log,
    request,
    wait_until,
)
from .support import route as s3_route

SLICE = 64 * 1024


def cache_gateway(
    make_gateway: Callable[[str], GatewayThread],
    origin: OriginThread,
    folder: Path,
    extra: str = "",
) -> GatewayThread:
    return make_gateway(f"""
        [[routes]]
        prefix = "/c"
        integration = "http_proxy"
        upstream = "{origin.url}"
        cache_dir = "{folder}"
        cache_slice_bytes = {SLICE}
        cache_max_bytes = {64 * SLICE}
        {extra}
    """)


@pytest.fixture
def gateway(make_gateway, origin: OriginThread, tmp_path: Path) -> GatewayThread:  # type: ignore[no-untyped-def]
    return cache_gateway(make_gateway, origin, tmp_path / "cache")


def sent(origin: OriginThread) -> int:
    return origin.origin.body_bytes


def get(gateway: GatewayThread, target: str, headers: dict[str, str] | None = None) -> Response:
    return request(gateway.port, "GET", target, headers=headers)


def test_a_miss_then_hits_the_origin_sending_each_byte_once(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    size = 5 * SLICE + 123
    first = get(gateway, f"/c/bytes?n={size}")
    assert first.status == 200 and first.headers["x-cache"] == "MISS"
    assert first.body == pattern(0, size)
    assert first.headers["content-length"] == str(size)
    assert first.headers["etag"] == f'"bytes-{size}"'
    assert sent(origin) == size
    for _ in range(3):
        again = get(gateway, f"/c/bytes?n={size}")
        assert (again.status, again.headers["x-cache"]) == (200, "HIT")
        assert again.body == pattern(0, size)
        assert again.headers["etag"] == f'"bytes-{size}"'
        assert again.headers["content-type"] == "application/octet-stream"
    assert sent(origin) == size  # never asked again


@pytest.mark.parametrize(
    "first, last",
    [(0, 0), (SLICE - 1, SLICE), (SLICE - 10, 3 * SLICE + 9), (4 * SLICE, 5 * SLICE + 122)],
)
def test_ranges_across_slice_edges_fetch_only_the_slices_they_touch(
    gateway: GatewayThread, origin: OriginThread, first: int, last: int
) -> None:
    size = 5 * SLICE + 123
    response = get(gateway, f"/c/bytes?n={size}", {"Range": f"bytes={first}-{last}"})
    assert response.status == 206, response
    assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert response.body == pattern(first, last - first + 1)
    touched = last // SLICE - first // SLICE + 1
    assert sent(origin) == sum(
        min(SLICE, size - index * SLICE)
        for index in range(first // SLICE, first // SLICE + touched)
    )
    whole = get(gateway, f"/c/bytes?n={size}")
    assert whole.body == pattern(0, size) and whole.headers["x-cache"] == "MISS"
    assert sent(origin) == size, origin.origin.served  # the slices there were not fetched again
    suffix = get(gateway, f"/c/bytes?n={size}", {"Range": "bytes=-100"})
    assert (suffix.status, suffix.headers["x-cache"]) == (206, "HIT")
    assert suffix.body == pattern(size - 100, 100)


def test_multipart_ranges_from_slices(gateway: GatewayThread) -> None:
    size = 3 * SLICE
    response = get(
        gateway, f"/c/bytes?n={size}", {"Range": f"bytes=0-9,{2 * SLICE}-{2 * SLICE + 9}"}
    )
    assert response.status == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert pattern(0, 10) in response.body and pattern(2 * SLICE, 10) in response.body
    assert f"Content-Range: bytes {2 * SLICE}-{2 * SLICE + 9}/{size}".encode() in response.body
    assert len(response.body) == int(response.headers["content-length"])


def test_an_origin_that_ignores_range_is_read_once_and_sliced(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    size = 3 * SLICE + 5
    target = f"/c/bytes?n={size}&ranges=ignore"
    response = get(gateway, target, {"Range": f"bytes={SLICE}-"})
    assert response.status == 206 and response.body == pattern(SLICE, size - SLICE)
    assert sent(origin) == size
    for first in (0, 2 * SLICE, 3 * SLICE):
        part = get(gateway, target, {"Range": f"bytes={first}-"})
        assert (part.status, part.headers["x-cache"]) == (206, "HIT")
        assert part.body == pattern(first, size - first)
    assert sent(origin) == size


def test_stale_revalidates_with_a_304(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread, tmp_path: Path
) -> None:
    gateway = cache_gateway(make_gateway, origin, tmp_path / "c", "cache_default_ttl = 0")
    size = 2 * SLICE
    assert get(gateway, f"/c/bytes?n={size}").headers["x-cache"] == "MISS"
    again = get(gateway, f"/c/bytes?n={size}")
    assert (again.headers["x-cache"], again.body) == ("REVALIDATED", pattern(0, size))
    assert sent(origin) == size
    assert [row[2] for row in origin.origin.served] == [206, 304]
    conditional = get(gateway, f"/c/bytes?n={size}", {"If-None-Match": f'"bytes-{size}"'})
    assert conditional.status == 304


def test_a_new_etag_replaces_every_slice_of_the_old_version(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread, tmp_path: Path
) -> None:
    gateway = cache_gateway(make_gateway, origin, tmp_path / "c", "cache_default_ttl = 0")
    size = 3 * SLICE
    get(gateway, f"/c/bytes?n={size}")
    origin.origin.version = 1
    changed = get(gateway, f"/c/bytes?n={size}")
    assert changed.headers["x-cache"] == "MISS"
    assert changed.headers["etag"] == f'"bytes-{size}-v1"'
    assert changed.body == pattern(1, size)
    hit = get(gateway, f"/c/bytes?n={size}", {"Range": f"bytes={SLICE}-"})
    assert hit.body == pattern(1 + SLICE, 2 * SLICE)
    names = [p.name for p in (tmp_path / "c").rglob("*") if p.is_file() and p.name != "meta.json"]
    assert len(names) == 3 and len({name.split(".")[0] for name in names}) == 1


@pytest.mark.parametrize(
    "query, headers, reason",
    [
        ("&cc=no-store", {}, "no-store"),
        ("&cc=private", {}, "private"),
        ("&vary=Cookie", {}, "Vary"),
        ("&etag=weak", {}, "weak ETag"),
        ("&etag=none", {}, "no ETag"),
        ("", {"Authorization": "Bearer x"}, "Authorization"),
        ("", {"Cache-Control": "no-store"}, "request no-store"),
    ],
)
def test_bypass(
    gateway: GatewayThread, origin: OriginThread, query: str, headers: dict[str, str], reason: str
) -> None:
    size = SLICE + 7
    for _ in range(2):
        response = get(gateway, f"/c/bytes?n={size}{query}", headers)
        assert response.status == 200, reason
        assert response.headers["x-cache"] == "BYPASS", reason
        assert response.body == pattern(0, size)
    assert not any(
        p.is_file() and "." in p.name
        for p in gateway.config.routes[0].settings.cache.directory.rglob("*.*")
        if p.name != "meta.json"
    )


# An object the origin gives no ETag, only a Last-Modified (1700000000 + its version).
LAST_MODIFIED_ONLY = "&etag=none&lm=1700000000"


def test_an_object_with_only_last_modified_is_cached_whole(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    size = 3 * SLICE + 9
    target = f"/c/bytes?n={size}{LAST_MODIFIED_ONLY}"
    first = get(gateway, target)
    assert (first.status, first.headers["x-cache"]) == (200, "MISS")
    assert first.body == pattern(0, size) and "etag" not in first.headers
    modified = first.headers["last-modified"]
    assert modified == "Tue, 14 Nov 2023 22:13:20 GMT"
    part = get(gateway, target, {"Range": f"bytes={SLICE}-"})
    assert (part.status, part.headers["x-cache"]) == (206, "HIT")
    assert part.body == pattern(SLICE, size - SLICE)
    assert get(gateway, target, {"If-Modified-Since": modified}).status == 304
    assert sent(origin) == size


def test_a_part_of_an_object_with_only_last_modified_is_not_cached(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    size = 3 * SLICE
    target = f"/c/bytes?n={size}{LAST_MODIFIED_ONLY}"
    part = get(gateway, target, {"Range": f"bytes={SLICE}-"})
    assert (part.status, part.headers["x-cache"]) == (206, "BYPASS")
    assert part.body == pattern(SLICE, 2 * SLICE)
    whole = get(gateway, target, {"Range": "bytes=0-"})  # what a player asks first
    assert (whole.status, whole.headers["x-cache"]) == (206, "MISS")
    again = get(gateway, target, {"Range": f"bytes={SLICE}-"})
    assert (again.headers["x-cache"], again.body) == ("HIT", pattern(SLICE, 2 * SLICE))


def test_an_object_with_only_last_modified_missing_a_slice_is_read_whole_again(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    size = 8 * SLICE
    target = f"/c/bytes?n={size}{LAST_MODIFIED_ONLY}"
    get(gateway, target)
    get(gateway, f"/c/bytes?n={60 * SLICE}")  # the bound is 64 slices: the oldest go
    before = sent(origin)
    again = get(gateway, target)
    assert (again.status, again.headers["x-cache"]) == (200, "MISS")
    assert again.body == pattern(0, size)
    assert sent(origin) - before == size  # not a range of it: another response's bytes
    assert get(gateway, target).headers["x-cache"] == "HIT"


def test_last_modified_only_revalidates_with_if_modified_since(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread, tmp_path: Path
) -> None:
    gateway = cache_gateway(make_gateway, origin, tmp_path / "c", "cache_default_ttl = 0")
    size = 2 * SLICE
    target = f"/c/bytes?n={size}{LAST_MODIFIED_ONLY}"
    assert get(gateway, target).headers["x-cache"] == "MISS"
    again = get(gateway, target)
    assert (again.headers["x-cache"], again.body) == ("REVALIDATED", pattern(0, size))
    assert [row[2] for row in origin.origin.served] == [206, 304]
    origin.origin.version = 1  # modified a second later
    changed = get(gateway, target)
    assert (changed.headers["x-cache"], changed.body) == ("MISS", pattern(1, size))
    assert changed.headers["last-modified"] == "Tue, 14 Nov 2023 22:13:21 GMT"


def test_vary_accept_encoding_is_cached(gateway: GatewayThread) -> None:
    get(gateway, "/c/bytes?n=1000&vary=Accept-Encoding")
    assert get(gateway, "/c/bytes?n=1000&vary=Accept-Encoding").headers["x-cache"] == "HIT"


def test_errors_and_head_pass_through(gateway: GatewayThread) -> None:
    missing = get(gateway, "/c/nothing-here")
    assert (missing.status, missing.headers["x-cache"]) == (404, "BYPASS")
    head = request(gateway.port, "HEAD", "/c/bytes?n=100")
    assert (head.status, head.headers["x-cache"]) == (200, "BYPASS")


def test_a_head_of_a_stored_object_is_answered_from_the_cache(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    size = 2 * SLICE + 5
    target = f"/c/bytes?n={size}"
    get(gateway, target)
    hit = get(gateway, target)
    asked = len(origin.origin.served)
    head = request(gateway.port, "HEAD", target)
    assert (head.status, head.headers["x-cache"], head.body) == (200, "HIT", b"")
    assert {k: v for k, v in head.headers.items() if k not in ("date", "age")} == {
        k: v for k, v in hit.headers.items() if k not in ("date", "age")
    }
    # Range is defined for GET only (RFC 9110 §14.2): a HEAD's is ignored.
    ranged = request(gateway.port, "HEAD", target, {"Range": "bytes=0-9"})
    assert (ranged.status, ranged.headers["content-length"]) == (200, str(size))
    etag = head.headers["etag"]
    conditional = request(gateway.port, "HEAD", target, {"If-None-Match": etag})
    assert (conditional.status, conditional.headers["x-cache"]) == (304, "HIT")
    assert len(origin.origin.served) == asked, origin.origin.served[asked:]


def test_x_cache_opt_out(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread, tmp_path: Path
) -> None:
    gateway = cache_gateway(make_gateway, origin, tmp_path / "c", "x_cache = false")
    assert "x-cache" not in get(gateway, "/c/bytes?n=100").headers


def test_eviction_keeps_the_cache_under_its_bound(
    gateway: GatewayThread, origin: OriginThread, tmp_path: Path
) -> None:
    bound = 64 * SLICE
    for number in range(12):  # 12 objects of 8 slices: 96 slices for room for 64
        response = get(gateway, f"/c/bytes?n={8 * SLICE}&object={number}")
        assert response.body == pattern(0, 8 * SLICE)
        on_disk = sum(
            p.stat().st_blocks * 512 for p in (tmp_path / "cache").rglob("*") if p.is_file()
        )
        assert on_disk <= bound + 16 * 4096  # metas of objects whose slices are going
    assert get(gateway, f"/c/bytes?n={8 * SLICE}&object=11").headers["x-cache"] == "HIT"
    assert get(gateway, f"/c/bytes?n={8 * SLICE}&object=0").headers["x-cache"] == "MISS"


def test_concurrent_clients_share_one_origin_read(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    size = 20 * SLICE
    target = f"/c/bytes?n={size}&chunk=16384&interval=0.005"
    results: list[Response] = []
    threads = [
        threading.Thread(target=lambda: results.append(get(gateway, target))) for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 10
    digest = hashlib.sha256(pattern(0, size)).hexdigest()
    assert all(hashlib.sha256(r.body).hexdigest() == digest for r in results)
    assert sent(origin) == size, origin.origin.served


def test_a_fill_holds_one_slice_file_open_at_a_time(
    gateway: GatewayThread, origin: OriginThread, tmp_path: Path
) -> None:
    """A slice's file is begun when the body reaches it: a fill of a long object does not
    open one file per slice up front (a 10 GiB object in 1 MiB slices would take 10,240)."""
    size = 32 * SLICE
    target = f"/c/bytes?n={size}&chunk=16384&interval=0.002"
    folder = tmp_path / "cache"
    most = 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(get, gateway, target)
        while not answer.done():
            most = max(most, len(list(folder.rglob(".tmp-*"))))
            time.sleep(0.005)
        assert answer.result().body == pattern(0, size)
    assert 1 <= most <= 2  # at a slice's end, the next may begin before the last is renamed
    assert sent(origin) == size


@dataclass
class CacheProcess:
    port: int
    stderr: str = ""  # what it logged, once it has stopped


@contextlib.contextmanager
def cache_process(
    origin: OriginThread, tmp_path: Path, route: str, *, file_size_limit: int | None = None
) -> Iterator[CacheProcess]:
    """The gateway in a process of its own with one cached route ``/c``; ``file_size_limit``:
    once it has started, no file it writes may grow past that many bytes (RLIMIT_FSIZE with
    SIGXFSZ ignored: a write past it fails with EFBIG, as when a disk fills up)."""
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[server]
access_log = "off"
[[routes]]
prefix = "/c"
integration = "http_proxy"
upstream = "{origin.url}"
cache_dir = "{tmp_path / "cache"}"
{route}
""")
    running = CacheProcess(closed_port())
    gateway = subprocess.Popen(
        [sys.executable, "-m", "mediaproxy", "--config", str(config), "--port", str(running.port)],
        stderr=subprocess.PIPE,  # a pipe: the size limit does not apply to it
        preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
    )
    try:
        wait_until(lambda: _answers(running.port), timeout_s=20)
        if file_size_limit is not None:  # its start-up writes files of its own
            limit = (file_size_limit, file_size_limit)
            resource.prlimit(gateway.pid, resource.RLIMIT_FSIZE, limit)
        yield running
    finally:
        gateway.terminate()
        running.stderr = gateway.communicate(timeout=30)[1].decode(errors="replace")


@pytest.mark.slow
def test_fifty_clients_of_a_cold_100_mib_object(origin: OriginThread, tmp_path: Path) -> None:
    """The issue's target: the origin sends each byte once, every client gets the same
    bytes, and every first byte comes within 50 ms of the first one; from the cache too."""
    # The gateway in a process of its own: the client here must not share its interpreter.
    size = 100 * 1024 * 1024
    route = f"cache_max_bytes = {256 * 1024 * 1024}\nidle_timeout = 60"
    expected = pattern(0, size)
    with cache_process(origin, tmp_path, route) as gateway:
        get_port(gateway.port, "/c/bytes?n=1")
        # What fifty requests cost this process with no body to send: the machine's floor.
        floor = first_bytes_at_once(gateway.port, "/c/bytes?n=1", 50, pattern(0, 1))
        before = sent(origin)
        target = f"/c/bytes?n={size}"
        cold = first_bytes_at_once(gateway.port, target, 50, expected)  # one fill for all
        assert sent(origin) - before == size, origin.origin.served
        hits = first_bytes_at_once(gateway.port, target, 50, expected)  # from the cache
    assert cold.identical and hits.identical
    # The target is 50 ms; on a machine too loaded for fifty small answers to start within a
    # third of that, three times their spread. A stream that kept the loop while its client
    # drained (a fill, or a hit sending slice after slice) held the others back far longer.
    limit = max(0.05, 3 * floor.first_byte_spread_s)
    spreads = f"cold {cold.first_byte_spread_s:.3f} s, hits {hits.first_byte_spread_s:.3f} s"
    assert cold.first_byte_spread_s < limit and hits.first_byte_spread_s < limit, spreads


@pytest.mark.parametrize(
    "file_size_limit, query",
    [
        (SLICE // 2, ""),  # the disk fills in the middle of a slice
        (SLICE // 2, "&ranges=ignore"),  # the same, the rest coming in the origin's 200
        (64, ""),  # not even the meta fits
    ],
)
def test_a_full_disk_serves_every_client_uncached_and_logs_once(
    origin: OriginThread, tmp_path: Path, file_size_limit: int, query: str
) -> None:
    size = 3 * SLICE
    # Slow enough that the clients share one fill, and some have their first bytes from it
    # when it fails.
    target = f"/c/bytes?n={size}&chunk=4096&interval=0.002{query}"
    route = f"cache_slice_bytes = {SLICE}"
    with cache_process(origin, tmp_path, route, file_size_limit=file_size_limit) as gateway:
        port = gateway.port
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(get_port, port, target) for _ in range(4)]
            time.sleep(0.05)
            futures += [pool.submit(get_port, port, target) for _ in range(2)]
            results = [future.result(30) for future in futures]
        for response in results:
            assert response.status == 200, response
            assert response.body == pattern(0, size)
        after = get_port(port, target)
        assert (after.status, after.headers["x-cache"]) == (200, "BYPASS")
        assert after.body == pattern(0, size)
        states = {r.headers["x-cache"] for r in results}
        if file_size_limit < 100:  # the meta did not fit: nobody had a response from the cache
            assert states == {"BYPASS"}
        else:  # the fill's first client had its first bytes from the fill, the rest not
            assert "MISS" in states
    log = gateway.stderr
    assert log.count("disk full") == 1, log
    assert "Traceback" not in log, log
    folder = tmp_path / "cache"
    assert not list(folder.rglob(".tmp-*"))
    slices = [p for p in folder.rglob("*.*") if p.name != "meta.json"]
    assert {p.stat().st_size for p in slices} == {1}  # /c/bytes?n=1's, from before the limit


@pytest.mark.slow
def test_aborted_clients_leave_no_fill_and_no_descriptor(
    gateway: GatewayThread, origin: OriginThread
) -> None:
    assert gateway.running is not None
    cache = gateway.running.gateway.integrations[0].cache  # type: ignore[attr-defined]
    get(gateway, "/c/bytes?n=10")
    baseline = open_fds()
    for number in range(1000):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            target = f"/c/bytes?n={4 * SLICE}&object={number % 50}&chunk=4096&interval=0.01"
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.recv(1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def settled() -> bool:
        busy = gateway.call(lambda: len(cache._filling) + len(cache._probes))
        return busy == 0 and gateway.active_streams() == 0 and origin.open_connections == 0

    wait_until(settled, timeout_s=30)
    wait_until(lambda: open_fds() <= baseline + 2, timeout_s=10)
    assert not list(cache.store.directory.rglob(".tmp-*"))


def test_a_killed_worker_leaves_no_partial_slice(origin: OriginThread, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    config = tmp_path / "mediaproxy.toml"
    config.write_text(f"""
[server]
port = 0
processes = 2
[[routes]]
prefix = "/c"
integration = "http_proxy"
upstream = "{origin.url}"
cache_dir = "{folder}"
cache_slice_bytes = {SLICE}
""")
    size = 8 * SLICE
    slow = f"/c/bytes?n={size}&chunk=4096&interval=0.01"
    server = Server(config)
    try:
        # A worker that dies in its first second stops the server instead of a restart.
        time.sleep(max(0.0, server.started_at + MIN_UPTIME_S + 0.2 - time.monotonic()))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET {slow} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.recv(65536)
            wait_until(lambda: bool(list(folder.rglob(".tmp-*"))))
            for pid in server.worker_pids:
                os.kill(pid, signal.SIGKILL)
        # The supervisor starts new workers; they rebuild the index and discard the rest.
        wait_until(lambda: _answers(server.port), timeout_s=20)
        for _ in range(4):  # whichever worker answers
            response = get_port(server.port, f"/c/bytes?n={size}&chunk=4096&interval=0.01")
            assert response.status == 200 and response.body == pattern(0, size)
        assert not list(folder.rglob(".tmp-*"))
        for path in folder.rglob("*.?"):  # the big object's slices, and the 1-byte one's
            assert path.stat().st_size in (SLICE, 1)
    finally:
        server.close()


def _answers(port: int) -> bool:
    try:
        return request(port, "GET", "/c/bytes?n=1", timeout=2).status == 200
    except OSError:
        return False


def get_port(port: int, target: str) -> Response:
    return request(port, "GET", target)


def test_metrics_access_log_and_status_page_show_the_cache(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread, tmp_path: Path
) -> None:
    gateway = make_gateway(f"""
        [server]
        access_log = "{tmp_path / "access.log"}"
        [[routes]]
        prefix = "/c"
        integration = "http_proxy"
        upstream = "{origin.url}"
        cache_dir = "{tmp_path / "c"}"
        cache_slice_bytes = {SLICE}
        cache_max_bytes = {64 * SLICE}
    """)
    size = 3 * SLICE
    get(gateway, f"/c/bytes?n={size}")
    get(gateway, f"/c/bytes?n={size}")
    get(gateway, f"/c/bytes?n={size}&cc=no-store")
    text = request(gateway.port, "GET", "/metrics").body.decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("route") == "/c"
    }

    def value(name: str, **labels: str) -> float:
        key = tuple(sorted({"route": "/c", "integration": "http_proxy", **labels}.items()))
        return samples.get((name, key), 0.0)

    assert value("mediaproxy_cache_responses_total", result="MISS") == 1
    assert value("mediaproxy_cache_responses_total", result="HIT") == 1
    assert value("mediaproxy_cache_responses_total", result="BYPASS") == 1
    # The miss's bytes went out as its fill wrote them, or from slices it had just stored.
    from_cache = value("mediaproxy_cache_sent_bytes_total", source="cache")
    from_fill = value("mediaproxy_cache_sent_bytes_total", source="origin")
    assert (from_cache + from_fill, from_cache >= size) == (2 * size, True)
    assert value("mediaproxy_cache_origin_bytes_total") == size
    assert value("mediaproxy_cache_size_bytes") >= size
    results = [line["cache"] for line in read_access_log(tmp_path / "access.log")]
    assert results == ["MISS", "HIT", "BYPASS"]
    overview = json.loads(request(gateway.port, "GET", "/_mediaproxy/api/overview").body)
    (route,) = overview["routes"]
    assert route["cache"]["max_bytes"] == 64 * SLICE
    assert route["cache"]["size_bytes"] >= size


def test_an_s3_route_caches_its_objects(
    s3_store: S3Store, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    body = pattern(0, 3 * SLICE + 11)
    s3_store.put("cached/clip.bin", body)
    gateway = make_gateway(
        s3_route(
            s3_store,
            s3_store.reader,
            monkeypatch,
            f'key_prefix = "cached/"\ncache_dir = "{tmp_path / "c"}"\n'
            f"cache_slice_bytes = {SLICE}\ncache_max_bytes = {64 * SLICE}\n",
        )
    )
    first = get(gateway, "/s3/clip.bin", {"Range": f"bytes={SLICE - 5}-{SLICE + 4}"})
    assert (first.status, first.headers["x-cache"], first.body) == (
        206,
        "MISS",
        body[SLICE - 5 : SLICE + 5],
    )
    whole = get(gateway, "/s3/clip.bin")
    assert (whole.status, whole.body) == (200, body)
    again = get(gateway, "/s3/clip.bin")
    assert (again.headers["x-cache"], again.body) == ("HIT", body)
    assert again.headers["etag"] == whole.headers["etag"]
    missing = get(gateway, "/s3/nothing.bin")
    assert missing.status == 404
