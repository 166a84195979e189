"""/metrics and the access log after real requests, cut streams included."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import (
    GatewayThread,
    make_sparse_file,
    open_stalled_download,
    read_access_log,
    request,
    wait_until,
)

BIG_BYTES = 64 * 1024 * 1024
SMALL = b"twenty bytes of text"
LOG_KEYS = {
    "time",
    "route",
    "integration",
    "method",
    "path",
    "status",
    "bytes_sent",
    "bytes_received",
    "ttfb_ms",
    "duration_ms",
    "termination",
    "client",
    "upstream_status",
    "range",
    "content_range",
    "cache",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def gateway(make_gateway, tmp_path: Path) -> GatewayThread:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.txt").write_bytes(SMALL)
    make_sparse_file(root / "big.bin", BIG_BYTES)
    gateway: GatewayThread = make_gateway(f"""
        [server]
        access_log = "{tmp_path / "access.log"}"
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
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_and_access_log_agree_on_every_exchange(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    port = gateway.port
    files = {"route": "/files", "integration": "file"}
    idle = {"route": "/idle", "integration": "file"}
    stalled = open_stalled_download(port, "/idle/big.bin")  # never read: the idle timer cuts it
    wait_until(lambda: value(scrape(port), "mediaproxy_active_streams", **idle) == 1)

    assert request(port, "GET", "/files/small.txt").body == SMALL
    assert request(port, "GET", "/files/small.txt").body == SMALL
    assert request(port, "GET", "/files/small.txt", {"Range": "bytes=0-5"}).status == 206
    assert request(port, "GET", "/files/missing.txt").status == 404
    assert request(port, "TRACE", "/files/small.txt").status == 405  # refused by Tornado itself
    leaving = open_stalled_download(port, "/files/big.bin")
    assert leaving.recv(65536)  # the stream has begun
    leaving.close()

    wait_until(
        lambda: (
            value(scrape(port), "mediaproxy_terminations_total", reason="idle_timeout", **idle) == 1
        )
    )
    stalled.close()
    wait_until(lambda: gateway.active_streams() == 0)
    samples = scrape(port)

    assert value(samples, "mediaproxy_requests_total", status="200", **files) == 3
    assert value(samples, "mediaproxy_requests_total", status="206", **files) == 1
    assert value(samples, "mediaproxy_requests_total", status="404", **files) == 1
    assert value(samples, "mediaproxy_terminations_total", reason="complete", **files) == 3
    assert value(samples, "mediaproxy_terminations_total", reason="rejected", **files) == 2
    assert value(samples, "mediaproxy_terminations_total", reason="client_closed", **files) == 1
    assert value(samples, "mediaproxy_active_streams", **files) == 0
    assert value(samples, "mediaproxy_active_streams", **idle) == 0
    assert value(samples, "mediaproxy_ttfb_seconds_count", **files) == 4  # the 404 sent no body
    assert value(samples, "mediaproxy_stream_duration_seconds_count", **files) == 6
    assert value(samples, "mediaproxy_stream_duration_seconds_bucket", le="+Inf", **idle) == 1

    lines = read_access_log(tmp_path / "access.log")
    assert all(set(line) == LOG_KEYS for line in lines)
    by_route = {
        route: [line for line in lines if line["route"] == route] for route in ("/files", "/idle")
    }
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
    (traced,) = [line for line in lines if line["method"] == "TRACE"]
    assert (traced["status"], traced["termination"]) == (405, "rejected")
    assert all(line["client"] == "127.0.0.1" and line["upstream_status"] is None for line in lines)


def test_the_log_says_where_each_range_request_landed(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    port, size, big = gateway.port, len(SMALL), BIG_BYTES
    asked = [
        ("small.txt", "bytes=0-5"),
        ("big.bin", "bytes=0-0,1000000-1000002"),
        ("small.txt", "bytes=100-"),
        ("small.txt", None),
        ("small.txt", "bytes=-3"),
    ]
    statuses = [
        request(port, "GET", f"/files/{name}", {"Range": header} if header else {}).status
        for name, header in asked
    ]
    assert statuses == [206, 206, 416, 200, 206]
    wait_until(lambda: len(read_access_log(tmp_path / "access.log")) == len(asked))
    lines = read_access_log(tmp_path / "access.log")
    assert [(line["range"], line["content_range"]) for line in lines] == [
        ("bytes=0-5", f"bytes 0-5/{size}"),
        ("bytes=0-0,1000000-1000002", f"bytes 0-0,1000000-1000002/{big}"),  # both parts
        ("bytes=100-", f"bytes */{size}"),
        (None, None),
        ("bytes=-3", f"bytes {size - 3}-{size - 1}/{size}"),
    ]
    assert [line["bytes_sent"] for line in lines[::3]] == [6, size]


def logged_proxy(
    make_gateway,
    origin,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    route_keys: str = "",
) -> GatewayThread:
    """A gateway relaying /api to the test origin, its access log in ``tmp_path``."""
    gateway: GatewayThread = make_gateway(f"""
        [server]
        access_log = "{tmp_path / "access.log"}"
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}"
        {route_keys}
    """)
    return gateway


def test_proxied_exchanges_log_upstream_status_upload_bytes_and_499(
    make_gateway, origin, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gateway = logged_proxy(make_gateway, origin, tmp_path)
    port = gateway.port
    assert request(port, "GET", "/api/status?code=418").status == 418
    upload = b"x" * 300_000
    assert request(port, "PUT", "/api/upload", body=upload).status == 200
    waiting = socket.create_connection(("127.0.0.1", port))
    waiting.sendall(b"GET /api/stall?headers=0 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: gateway.active_streams() == 1)
    waiting.close()  # before the origin has answered anything
    wait_until(lambda: len(read_access_log(tmp_path / "access.log")) == 3)

    teapot, uploaded, gone = read_access_log(tmp_path / "access.log")
    assert (teapot["status"], teapot["upstream_status"], teapot["termination"]) == (
        418,
        418,
        "complete",
    )
    assert (uploaded["bytes_received"], uploaded["upstream_status"]) == (len(upload), 200)
    assert (gone["status"], gone["upstream_status"], gone["termination"]) == (
        499,
        None,
        "client_closed",
    )
    samples = scrape(port)
    api = {"route": "/api", "integration": "http_proxy"}
    assert value(samples, "mediaproxy_received_bytes_total", **api) == len(upload)
    assert value(samples, "mediaproxy_requests_total", status="499", **api) == 1
    assert value(samples, "mediaproxy_terminations_total", reason="client_closed", **api) == 1


def test_ttfb_counts_from_the_first_body_byte_not_the_headers(
    make_gateway, origin, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gateway = logged_proxy(make_gateway, origin, tmp_path, route_keys="idle_timeout = 1")
    port = gateway.port
    assert request(port, "GET", "/api/bytes?n=10").status == 200
    assert request(port, "HEAD", "/api/bytes?n=10").status == 200
    headers_only = socket.create_connection(("127.0.0.1", port))
    headers_only.sendall(b"GET /api/stall?after=0 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: len(read_access_log(tmp_path / "access.log")) == 3)
    headers_only.close()

    got, head, stalled = read_access_log(tmp_path / "access.log")
    assert got["ttfb_ms"] is not None and got["bytes_sent"] == 10
    assert head["ttfb_ms"] is None and head["bytes_sent"] == 0
    # The origin's headers went out at once; no body byte ever did before the idle timer.
    assert stalled["termination"] == "idle_timeout" and stalled["status"] == 200
    assert stalled["ttfb_ms"] is None
