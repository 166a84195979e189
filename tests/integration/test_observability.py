"""/metrics and the access log after real requests, cut streams included."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import (GatewayThread, make_sparse_file, open_stalled_download, read_access_log,
                      request, wait_until)

BIG_BYTES = 64 * 1024 * 1024
SMALL = b"twenty bytes of text"
LOG_KEYS = {"time", "route", "integration", "method", "path", "status", "bytes_sent",
            "bytes_received", "ttfb_ms", "duration_ms", "termination", "client",
            "upstream_status"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def gateway(make_gateway, tmp_path: Path) -> GatewayThread:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.txt").write_bytes(SMALL)
    make_sparse_file(root / "big.bin", BIG_BYTES)
    gateway: GatewayThread = make_gateway(f"""
        [server]
        access_log = "{tmp_path / 'access.log'}"
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{root}"
        [[routes]]
        prefix = "/idle"
        integration = "file"
        root = "{root}"
        idle_timeout = 1
    """)
    return gateway


def scrape(port: int) -> Samples:
    reply = request(port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(reply.body.decode())
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_and_access_log_agree_on_every_exchange(gateway: GatewayThread,
                                                        tmp_path: Path) -> None:
    port = gateway.port
    files = {"route": "/files", "integration": "file"}
    idle = {"route": "/idle", "integration": "file"}
    stalled = open_stalled_download(port, "/idle/big.bin")  # never read: the idle timer cuts it
    wait_until(lambda: value(scrape(port), "mediaproxy_active_streams", **idle) == 1)

    assert request(port, "GET", "/files/small.txt").body == SMALL
    assert request(port, "GET", "/files/small.txt").body == SMALL
    assert request(port, "GET", "/files/small.txt", {"Range": "bytes=0-5"}).status == 206
    assert request(port, "GET", "/files/missing.txt").status == 404
    leaving = open_stalled_download(port, "/files/big.bin")
    assert leaving.recv(65536)  # the stream has begun
    leaving.close()

    wait_until(lambda: value(scrape(port), "mediaproxy_terminations_total",
                             reason="idle_timeout", **idle) == 1)
    stalled.close()
    wait_until(lambda: gateway.active_streams() == 0)
    samples = scrape(port)

    assert value(samples, "mediaproxy_requests_total", status="200", **files) == 3
    assert value(samples, "mediaproxy_requests_total", status="206", **files) == 1
    assert value(samples, "mediaproxy_requests_total", status="404", **files) == 1
    assert value(samples, "mediaproxy_terminations_total", reason="complete", **files) == 3
    assert value(samples, "mediaproxy_terminations_total", reason="rejected", **files) == 1
    assert value(samples, "mediaproxy_terminations_total", reason="client_closed", **files) == 1
    assert value(samples, "mediaproxy_active_streams", **files) == 0
    assert value(samples, "mediaproxy_active_streams", **idle) == 0
    assert value(samples, "mediaproxy_ttfb_seconds_count", **files) == 4  # the 404 sent no body
    assert value(samples, "mediaproxy_stream_duration_seconds_count", **files) == 5
    assert value(samples, "mediaproxy_stream_duration_seconds_bucket", le="+Inf", **idle) == 1

    lines = read_access_log(tmp_path / "access.log")
    assert all(set(line) == LOG_KEYS for line in lines)
    by_route = {route: [line for line in lines if line["route"] == route]
                for route in ("/files", "/idle")}
    for route, labels in (("/files", files), ("/idle", idle)):
        sent = sum(line["bytes_sent"] for line in by_route[route])
        assert value(samples, "mediaproxy_sent_bytes_total", **labels) == sent
    (cut,) = [line for line in by_route["/files"] if line["termination"] == "client_closed"]
    assert cut["status"] == 200 and 0 < cut["bytes_sent"] < BIG_BYTES
    (idled,) = by_route["/idle"]
    assert idled["termination"] == "idle_timeout" and idled["duration_ms"] >= 1000
    (missing,) = [line for line in lines if line["status"] == 404]
    assert missing["termination"] == "rejected" and missing["ttfb_ms"] is None
    complete = [line for line in lines if line["termination"] == "complete"]
    assert {line["bytes_sent"] for line in complete} == {len(SMALL), 6}
    assert all(line["client"] == "127.0.0.1" and line["upstream_status"] is None
               and line["method"] == "GET" for line in lines)

