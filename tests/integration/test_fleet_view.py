"""The status page's live table across a fleet: gateways that share a Redis show each other's
streams; with Redis gone, each shows its own again."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.redisserver import RedisServer

from .support import GatewayThread, make_sparse_file

MakeGateway = Callable[[str], GatewayThread]


def config(root: Path, redis_url: str) -> str:
    return f"""
        [shared_state]
        redis_url = "{redis_url}"
        timeout = 1
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{root}"
    """


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_sparse_file(tmp_path / "big.bin", 32 * 1024 * 1024)
    return tmp_path


def stalled(gateway: GatewayThread) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", gateway.port))
    sock.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    return sock


def events(gateway: GatewayThread) -> Iterator[dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("GET", "/_mediaproxy/events")
    reply = connection.getresponse()
    assert reply.status == 200
    try:
        while True:
            line = reply.fp.readline().decode()
            if line.startswith("data: "):
                yield json.loads(line[len("data: ") :])
    finally:
        connection.close()


def first_event(
    stream: Iterator[dict[str, Any]], wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first of the next few events (one a second) that has what ``wanted`` looks for."""
    seen = []
    for _, event in zip(range(8), stream):
        if wanted(event):
            return event
        seen.append(event)
    raise AssertionError(seen)


def test_gateways_on_one_redis_show_each_others_streams(
    make_gateway: MakeGateway, root: Path, redis_url: str
) -> None:
    first, second = make_gateway(config(root, redis_url)), make_gateway(config(root, redis_url))
    download = stalled(first)
    on_second = events(second)
    event = first_event(on_second, lambda event: bool(event["streams"]))
    assert event["fleet"] is True
    assert [(row["path"], row["host"]) for row in event["streams"]] == [
        ("/files/big.bin", socket.gethostname())
    ]
    on_first = events(first)
    event = first_event(on_first, lambda event: bool(event["streams"]))
    assert len(event["streams"]) == 1  # its own, not its own again through Redis
    download.close()
    first_event(on_second, lambda event: not event["streams"])


def test_with_redis_gone_a_gateway_shows_its_own_streams(
    make_gateway: MakeGateway, root: Path, own_redis: RedisServer
) -> None:
    gateway = make_gateway(config(root, own_redis.url))
    download = stalled(gateway)
    stream = events(gateway)
    first_event(stream, lambda event: event["fleet"] and len(event["streams"]) == 1)
    own_redis.kill()
    first_event(stream, lambda event: not event["fleet"] and len(event["streams"]) == 1)
    download.close()
