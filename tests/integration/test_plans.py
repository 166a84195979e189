"""Usage plans on real gateways: per-key rate, byte quotas and stream cap, in the instance's
memory and on a real Redis shared by two gateways; Redis killed under a running stream."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.redisserver import RedisServer

from .support import GatewayThread, drain, make_sparse_file, request

MakeGateway = Callable[[str], GatewayThread]
BIG_BYTES = 32 * 1024 * 1024
STEP_BYTES = 64 * 1024


def config(root: Path, plan: str, shared_state: str = "") -> str:
    return f"""
        [shared_state]
        quota_step_bytes = {STEP_BYTES}
        {shared_state}
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{root}"
        api_keys = ["gold-key", "other-key", "free-key"]
        [[plans]]
        name = "gold"
        keys = ["gold-key", "other-key"]
        {plan}
    """


def get(gateway: GatewayThread, path: str, key: str) -> tuple[int, dict[str, str], bytes]:
    reply = request(gateway.port, "GET", path, headers={"X-API-Key": key})
    return reply.status, reply.headers, reply.body


def stalled(gateway: GatewayThread, key: str, path: str = "/files/big.bin") -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", gateway.port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n".encode()
    )
    return sock


def status_of(sock: socket.socket) -> int:
    sock.settimeout(10)
    return int(sock.recv(4096).split(b" ", 2)[1])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_sparse_file(tmp_path / "big.bin", BIG_BYTES)
    (tmp_path / "small.txt").write_bytes(b"x" * 1000)
    return tmp_path


def test_a_rate_refuses_with_retry_after_per_key(make_gateway: MakeGateway, root: Path) -> None:
    gateway = make_gateway(config(root, "requests_per_second = 0.5\nburst = 2"))
    statuses = [get(gateway, "/files/small.txt", "gold-key")[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, headers, body = get(gateway, "/files/small.txt", "gold-key")
    assert (status, headers["retry-after"], body) == (429, "2", b"429 Too Many Requests\n")
    assert get(gateway, "/files/small.txt", "other-key")[0] == 200  # each key its own rate
    assert [get(gateway, "/files/small.txt", "free-key")[0] for _ in range(5)] == [200] * 5


def test_a_quota_cuts_a_download_within_one_step_and_refuses_until_the_reset(
    make_gateway: MakeGateway, root: Path
) -> None:
    quota = 1024 * 1024
    gateway = make_gateway(config(root, f"bytes_per_day = {quota}"))
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    connection.request("GET", "/files/big.bin", headers={"X-API-Key": "gold-key"})
    reply = connection.getresponse()
    assert reply.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        reply.read()
    connection.close()
    assert quota <= len(cut.value.partial) <= quota + STEP_BYTES
    status, headers, _ = get(gateway, "/files/small.txt", "gold-key")
    assert status == 429
    assert headers["x-quota-reset"].endswith(" 00:00:00 GMT")
    assert 0 < int(headers["retry-after"]) <= 86400
    assert get(gateway, "/files/small.txt", "free-key")[0] == 200


def test_small_responses_count_exactly(make_gateway: MakeGateway, root: Path) -> None:
    """The unsent part of a step is given back: 1,000-byte answers use 1,000 bytes each."""
    gateway = make_gateway(config(root, f"bytes_per_day = {3 * 1000}"))
    statuses = [get(gateway, "/files/small.txt", "gold-key")[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_the_key_stream_cap_is_a_429_and_a_finished_stream_frees_it(
    make_gateway: MakeGateway, root: Path
) -> None:
    gateway = make_gateway(config(root, "max_concurrent_streams = 1"))
    first = stalled(gateway, "gold-key")
    assert status_of(first) == 200
    refused = stalled(gateway, "gold-key")
    assert status_of(refused) == 429
    refused.close()
    other = stalled(gateway, "other-key")  # the cap is per key
    assert status_of(other) == 200
    other.close()
    first.close()
    deadline = time.monotonic() + 5
    while get(gateway, "/files/small.txt", "gold-key")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_two_instances_on_one_redis_share_the_stream_cap_and_the_quota(
    make_gateway: MakeGateway, root: Path, redis_url: str
) -> None:
    text = config(
        root,
        f"max_concurrent_streams = 2\nbytes_per_day = {2 * 1024 * 1024}",
        f'redis_url = "{redis_url}"',
    )
    first, second = make_gateway(text), make_gateway(text)
    running = [stalled(first, "gold-key"), stalled(second, "gold-key")]
    assert [status_of(sock) for sock in running] == [200, 200]
    for gateway in (first, second):
        refused = stalled(gateway, "gold-key")
        assert status_of(refused) == 429
        refused.close()
    for sock in running:
        sock.close()
    # What one instance streamed, the other counts: 2 MiB in all (another key on the plan,
    # so the streams just cut do not count), then 429 everywhere.
    statuses = []
    for index in range(6):
        gateway = (first, second)[index % 2]
        reply = request(
            gateway.port,
            "GET",
            "/files/big.bin",
            headers={"X-API-Key": "other-key", "Range": "bytes=0-524287"},
        )
        statuses.append(reply.status)
    assert statuses == [206, 206, 206, 206, 429, 429]


@pytest.mark.slow
def test_redis_killed_mid_stream_the_stream_goes_on_and_the_policy_applies(
    make_gateway: MakeGateway, root: Path, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    text = config(
        root,
        f"max_concurrent_streams = 5\nbytes_per_day = {10 * BIG_BYTES}",
        f'redis_url = "{own_redis.url}"\ntimeout = 0.2',
    )
    allowing = make_gateway(text)
    denying = make_gateway(
        text.replace("timeout = 0.2", 'timeout = 0.2\non_shared_state_error = "deny"')
    )
    sock = stalled(allowing, "gold-key")
    sock.settimeout(10)
    head = sock.recv(4096)  # the status line, and as much of the body as came with it
    assert head.startswith(b"HTTP/1.1 200 ")
    own_redis.kill()
    received = len(head) + drain(sock)
    sock.close()
    assert received >= BIG_BYTES  # the whole body came, headers and all
    assert [get(allowing, "/files/small.txt", "gold-key")[0] for _ in range(3)] == [200] * 3
    assert get(denying, "/files/small.txt", "gold-key")[0] == 503
    assert get(denying, "/files/small.txt", "free-key")[0] == 200  # no plan, no Redis
    outages = [r for r in caplog.records if "shared state unreachable" in r.getMessage()]
    assert len(outages) == 2  # one line per gateway for the outage, not one per request
    metrics = request(allowing.port, "GET", "/metrics").body.decode()
    assert "mediaproxy_shared_state_up 0.0" in metrics
    own_redis.start()
    time.sleep(1.1)  # past the pause after a failure: the next request asks Redis again
    assert get(denying, "/files/small.txt", "gold-key")[0] == 200
    metrics = request(denying.port, "GET", "/metrics").body.decode()
    assert "mediaproxy_shared_state_up 1.0" in metrics


def test_a_reload_applies_a_changed_plan_to_new_requests_and_keeps_the_stream_running(
    make_gateway: MakeGateway, root: Path, tmp_path: Path
) -> None:
    from mediaproxy import config as config_module

    gateway = make_gateway(config(root, "max_concurrent_streams = 1"))
    running = stalled(gateway, "gold-key")
    assert status_of(running) == 200
    assert get(gateway, "/files/small.txt", "gold-key")[0] == 429
    path = tmp_path / "reloaded.toml"
    path.write_text(config(root, "max_concurrent_streams = 2"))
    loaded = config_module.load(path)
    assert gateway.running is not None
    server = gateway.running
    gateway.call(lambda: server.reload(loaded))
    # The running stream still holds its slot under the new cap: one more, not two.
    assert get(gateway, "/files/small.txt", "gold-key")[0] == 200
    second = stalled(gateway, "gold-key")
    assert status_of(second) == 200
    assert get(gateway, "/files/small.txt", "gold-key")[0] == 429
    second.close()
    # Began before the reload, ends whole after it (status_of read its first 4 KiB).
    assert drain(running) > BIG_BYTES - 4096
    running.close()
