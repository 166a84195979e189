"""What the status page and /metrics show, to whom, and what looking at them costs.

Private routes (API keys, signed URLs) never show on a surface anybody may read; an admin key
makes both surfaces private, and then they show everything. The overview scans the roots on its
own small pool, regular files only and without blocking on any of them.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from testbed.origin import OriginThread

from .support import GatewayThread, Response, open_stalled_download, request, wait_until

SAMPLE_MEDIA = Path(__file__).resolve().parents[2] / "sample_media"
ROUTE_KEY = "route-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
SECRET = "s" * 32
SURFACES = (
    "/_mediaproxy/",
    "/_mediaproxy/status.js",
    "/_mediaproxy/api/overview",
    "/_mediaproxy/events",
    "/metrics",
)


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    """One folder per route, each with an audio file (and a big one to keep a stream open)."""
    folders = {}
    for name in ("public", "keyed", "signed"):
        folder = folders[name] = tmp_path / name
        folder.mkdir()
        shutil.copy(SAMPLE_MEDIA / "audio" / "sine-523hz.mp3", folder / f"{name}-tune.mp3")
        with (folder / "big.bin").open("wb") as stream:
            stream.truncate(64 * 1024 * 1024)
    return folders


def routes_toml(roots: dict[str, Path]) -> str:
    return f"""
        [[routes]]
        prefix = "/public"
        integration = "file"
        root = "{roots["public"]}"
        [[routes]]
        prefix = "/keyed"
        integration = "file"
        root = "{roots["keyed"]}"
        api_keys = ["{ROUTE_KEY}"]
        [[routes]]
        prefix = "/signed"
        integration = "file"
        root = "{roots["signed"]}"
        signing_secret = "{SECRET}"
    """


def overview(port: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    reply = request(port, "GET", "/_mediaproxy/api/overview", headers=headers)
    assert reply.status == 200, reply.body
    result: dict[str, Any] = json.loads(reply.body)
    return result


def first_event(port: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The first server-sent event of /_mediaproxy/events, parsed."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /_mediaproxy/events HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
        received = b""
        while b"\n\n" not in received.partition(b"\ndata: ")[2]:
            data = sock.recv(65536)
            assert data, received
            received += data
    head = received.split(b"\r\n", 1)[0]
    assert b" 200 " in head, received
    payload = received.split(b"\ndata: ", 1)[1].split(b"\n", 1)[0]
    event: dict[str, Any] = json.loads(payload)
    return event


def metric_routes(port: int, headers: dict[str, str] | None = None) -> set[tuple[str, str]]:
    """The (route, integration) label pairs /metrics shows."""
    reply = request(port, "GET", "/metrics", headers=headers)
    assert reply.status == 200
    pairs = set()
    for line in reply.body.decode().splitlines():
        if line.startswith("mediaproxy_") and 'route="' in line:
            route = line.split('route="', 1)[1].split('"', 1)[0]
            integration = line.split('integration="', 1)[1].split('"', 1)[0]
            pairs.add((route, integration))
    return pairs


@pytest.fixture
def stalled(roots: dict[str, Path]) -> Iterator[Callable[[GatewayThread], None]]:
    """Start a stalled download on every route (with its credentials); closed after the test."""
    sockets: list[socket.socket] = []

    def start(gateway: GatewayThread) -> None:
        from mediaproxy.http.signing import sign_query

        expires = int(time.time()) + 600
        query = sign_query(SECRET.encode(), "GET", "/signed/big.bin", expires)
        keyed = socket.socket()
        keyed.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        keyed.connect(("127.0.0.1", gateway.port))
        keyed.sendall(
            f"GET /keyed/big.bin HTTP/1.1\r\nHost: x\r\nX-API-Key: {ROUTE_KEY}\r\n\r\n".encode()
        )
        sockets.extend(
            [
                open_stalled_download(gateway.port, "/public/big.bin"),
                keyed,
                open_stalled_download(gateway.port, f"/signed/big.bin?{query}"),
            ]
        )
        wait_until(lambda: gateway.active_streams() == 3)

    yield start
    for sock in sockets:
        sock.close()


def test_public_surfaces_never_show_private_routes(
    make_gateway: Callable[[str], GatewayThread],
    roots: dict[str, Path],
    stalled: Callable[[GatewayThread], None],
) -> None:
    gateway = make_gateway(routes_toml(roots))
    port = gateway.port
    assert (
        request(port, "GET", "/keyed/keyed-tune.mp3", headers={"X-API-Key": ROUTE_KEY}).status
        == 200
    )
    stalled(gateway)

    shown = overview(port)
    assert [route["prefix"] for route in shown["routes"]] == ["/public"]
    assert [sample["url"] for sample in shown["samples"]] == ["/public/public-tune.mp3"]
    event = first_event(port)
    assert [(s["route"], s["path"]) for s in event["streams"]] == [("/public", "/public/big.bin")]
    # Counted all the same, under one label that names no path.
    assert metric_routes(port) == {("/public", "file"), ("(restricted)", "(restricted)")}


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"admin:{key}".encode()).decode()


def test_an_admin_key_protects_both_surfaces_which_then_show_everything(
    make_gateway: Callable[[str], GatewayThread],
    roots: dict[str, Path],
    stalled: Callable[[GatewayThread], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEDIAPROXY_TEST_ADMIN", f"other-admin-key,{ADMIN_KEY}")
    gateway = make_gateway(
        """
        [server]
        admin_api_keys_env = "MEDIAPROXY_TEST_ADMIN"
    """
        + routes_toml(roots)
    )
    port = gateway.port
    stalled(gateway)
    for path in SURFACES:
        for headers in (
            {},
            {"Authorization": "Bearer " + ADMIN_KEY + "x"},
            {"Authorization": basic(ROUTE_KEY)},
            {"X-API-Key": ADMIN_KEY},
            {"Authorization": "Basic !!!"},
            {"Authorization": "Bearer"},
        ):
            refused = request(port, "GET", path, headers=headers)
            assert refused.status == 401, (path, headers)
            assert refused.headers["www-authenticate"] == 'Basic realm="mediaproxy admin"'
            assert refused.body == b"401 Unauthorized\n"
    assert request(port, "GET", "/healthz").status == 200  # load balancers need no key

    for credentials in ("Bearer " + ADMIN_KEY, basic(ADMIN_KEY), basic("other-admin-key")):
        admin = {"Authorization": credentials}
        shown = overview(port, admin)
        assert [route["prefix"] for route in shown["routes"]] == ["/public", "/keyed", "/signed"]
        assert sorted(sample["url"] for sample in shown["samples"]) == [
            "/keyed/keyed-tune.mp3",
            "/public/public-tune.mp3",
            "/signed/signed-tune.mp3",
        ]
        assert sorted(s["route"] for s in first_event(port, admin)["streams"]) == [
            "/keyed",
            "/public",
            "/signed",
        ]
        assert metric_routes(port, admin) == {
            ("/public", "file"),
            ("/keyed", "file"),
            ("/signed", "file"),
        }
        assert request(port, "GET", "/_mediaproxy/", headers=admin).status == 200


def test_each_surface_can_be_switched_off(
    make_gateway: Callable[[str], GatewayThread], roots: dict[str, Path], tmp_path: Path
) -> None:
    catch_all = tmp_path / "catch-all"
    (catch_all / "_mediaproxy" / "api").mkdir(parents=True)
    for name in (
        "metrics",
        "_mediaproxy/status.js",
        "_mediaproxy/api/overview",
        "_mediaproxy/events",
    ):
        (catch_all / name).write_text("a file that happens to have a reserved name")
    gateway = make_gateway(
        """
        [server]
        status_page = false
        metrics = false
    """
        + routes_toml(roots)
        + f"""
        [[routes]]
        prefix = "/"
        integration = "file"
        root = "{catch_all}"
    """
    )
    for path in SURFACES:
        reply = request(gateway.port, "GET", path)
        assert (reply.status, reply.body) == (404, b"404 Not Found\n"), path
    assert request(gateway.port, "GET", "/public/public-tune.mp3").status == 200


def release_fifo_readers(fifo: Path) -> None:
    """Let any thread blocked opening ``fifo`` for reading go (it then reads end of file)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as error:
            assert error.errno == errno.ENXIO  # nobody is waiting to read
        time.sleep(0.05)


def test_a_fifo_in_a_root_hangs_neither_the_overview_nor_upstream_connections(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread, roots: dict[str, Path]
) -> None:
    """The overview used to open every file with a blocking open() on the default executor:
    each look at it left a thread stuck on the FIFO, and once the pool was full the resolver
    (asyncio's getaddrinfo, on that same pool) stalled every new upstream connection."""
    fifo = roots["public"] / "a-pipe.mp3"
    os.mkfifo(fifo)
    (roots["public"] / "link.mp3").symlink_to(roots["public"] / "public-tune.mp3")
    gateway = make_gateway(
        routes_toml(roots)
        + f"""
        [[routes]]
        prefix = "/origin"
        integration = "http_proxy"
        upstream = "{origin.url}"
    """
    )
    try:
        with ThreadPoolExecutor(12) as clients:
            replies = list(
                clients.map(
                    lambda _: request(gateway.port, "GET", "/_mediaproxy/api/overview", timeout=5),
                    range(12),
                )
            )
        assert {reply.status for reply in replies} == {200}
        samples = [json.loads(reply.body)["samples"] for reply in replies]
        # Regular files only: neither the FIFO nor a symlink is opened or listed.
        assert [sample["url"] for sample in samples[0]] == ["/public/public-tune.mp3"]
        assert all(listed == samples[0] for listed in samples)
        fresh: Response = request(gateway.port, "GET", "/origin/bytes?n=1000", timeout=10)
        assert fresh.status == 200 and len(fresh.body) == 1000
    finally:
        release_fifo_readers(fifo)


def test_the_overview_is_cached(
    make_gateway: Callable[[str], GatewayThread], roots: dict[str, Path]
) -> None:
    gateway = make_gateway(routes_toml(roots))
    before = overview(gateway.port)
    shutil.copy(SAMPLE_MEDIA / "audio" / "sine-330hz.wav", roots["public"] / "new.wav")
    assert overview(gateway.port)["samples"] == before["samples"]
