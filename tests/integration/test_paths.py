"""One normalised path at the boundary: no spelling escapes a base path or a private prefix.

The origin (origin.py) reads paths the way ``python3 -m http.server`` and most frameworks do:
percent-decoded, dot and empty segments resolved. Every bypass below reached
``/admin/secret.txt`` or ``/secret.txt`` through the gateway before paths were normalised.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest

from testbed.origin import FILES, OriginThread

from .support import GatewayThread, request

KEY = "k-0123456789"
SECRETS = (FILES["/admin/secret.txt"], FILES["/secret.txt"])


def raw_get(port: int, target: str, headers: str = "") -> tuple[int, bytes]:
    """GET ``target`` byte for byte (no client normalising it); (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: gw\r\n{headers}Connection: close\r\n\r\n".encode(
                "latin-1"
            )
        )
        reply = b""
        while data := sock.recv(65536):
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def private_admin(origin: OriginThread) -> str:
    return f"""
        [[routes]]
        prefix = "/admin"
        integration = "http_proxy"
        upstream = "{origin.url}admin/"
        api_keys = ["{KEY}"]
    """


@pytest.fixture
def base_gateway(make_gateway, origin: OriginThread) -> GatewayThread:  # type: ignore[no-untyped-def]
    """/pub -> the origin's /base/, and a private /admin."""
    gateway: GatewayThread = make_gateway(
        private_admin(origin)
        + f"""
        [[routes]]
        prefix = "/pub"
        integration = "http_proxy"
        upstream = "{origin.url}base/"
    """
    )
    return gateway


def catch_all(origin: OriginThread, *, raw_path: bool) -> str:
    return (
        private_admin(origin)
        + f"""
        [[routes]]
        prefix = "/"
        integration = "http_proxy"
        upstream = "{origin.url}"
    """
        + ("raw_path = true\n" if raw_path else "")
    )


def test_the_routes_serve_what_they_should(
    base_gateway: GatewayThread, origin: OriginThread
) -> None:
    assert raw_get(base_gateway.port, "/pub/hello.txt") == (200, FILES["/base/hello.txt"])
    assert raw_get(base_gateway.port, "/admin/secret.txt")[0] == 401
    assert raw_get(base_gateway.port, "/admin/secret.txt", f"X-API-Key: {KEY}\r\n") == (
        200,
        FILES["/admin/secret.txt"],
    )


@pytest.mark.parametrize(
    "target",
    [
        "/pub/../admin/secret.txt",
        "/pub/%2e%2e/admin/secret.txt",
        "/pub/%2E%2E/admin/secret.txt",
        "/pub/..%2fsecret.txt",
        "/pub/..%2Fsecret.txt",
        "/pub/..%5csecret.txt",
        "/pub/..\\secret.txt",
        "/pub/.%2e/secret.txt",
        "/pub/..;x/secret.txt",
        "/pub//..//secret.txt",
    ],
)
def test_the_base_path_cannot_be_left(
    base_gateway: GatewayThread, origin: OriginThread, target: str
) -> None:
    status, body = raw_get(base_gateway.port, target)
    assert status == 400 and body not in SECRETS
    assert origin.origin.targets == [], "nothing ambiguous reaches the origin"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_path_as_is_is_refused(base_gateway: GatewayThread) -> None:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"{base_gateway.base_url}/pub/../admin/secret.txt",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout == "400"


@pytest.mark.parametrize(
    "target",
    [
        "//admin/secret.txt",
        "/./admin/secret.txt",
        "/admin%2fsecret.txt",
        "/admin%2Fsecret.txt",
        "/x/../admin/secret.txt",
        "/admin/./secret.txt",
        "/admin//secret.txt",
        "/%2e/admin/secret.txt",
        "/admin;x/secret.txt",
    ],
)
@pytest.mark.parametrize("raw_path", [False, True], ids=["normalised", "raw_path"])
def test_a_private_prefix_cannot_be_reached_through_a_catch_all(
    make_gateway,
    origin: OriginThread,
    target: str,  # type: ignore[no-untyped-def]
    raw_path: bool,
) -> None:
    gateway: GatewayThread = make_gateway(catch_all(origin, raw_path=raw_path))
    status, body = raw_get(gateway.port, target)
    assert status in (400, 401) and body not in SECRETS
    assert origin.origin.targets == []


@pytest.mark.parametrize("raw_path", [False, True], ids=["normalised", "raw_path"])
def test_an_escaped_unreserved_character_routes_like_the_plain_one(
    make_gateway, origin: OriginThread, raw_path: bool
) -> None:  # type: ignore[no-untyped-def]
    gateway: GatewayThread = make_gateway(catch_all(origin, raw_path=raw_path))
    assert raw_get(gateway.port, "/%61dmin/secret.txt")[0] == 401
    assert raw_get(gateway.port, "/%61dmin/secret.txt", f"X-API-Key: {KEY}\r\n") == (
        200,
        FILES["/admin/secret.txt"],
    )


def test_the_origin_gets_the_normalised_path_re_encoded(
    make_gateway,  # type: ignore[no-untyped-def]
    origin: OriginThread,
) -> None:
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
    """)
    status, body = raw_get(
        gateway.port, "/%61pi/%7Ea%2db/caf%c3%a9;p=1/x+y%3F/\xe9/?q=%2e%2E&r=/../"
    )
    assert status == 200
    # Unreserved escapes decoded, the others upper-cased, a raw byte escaped; query untouched.
    assert json.loads(body)["target"] == "/echo/~a-b/caf%C3%A9;p=1/x+y%3F/%E9/?q=%2e%2E&r=/../"


def test_a_raw_path_route_passes_the_path_as_sent(
    make_gateway,  # type: ignore[no-untyped-def]
    origin: OriginThread,
) -> None:
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
        raw_path = true
        [[routes]]
        prefix = "/strict"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
    """)
    below = "/a%2Fb//c;p=1/%25/caf%C3%A9/x+y%7e?q=1&r=%20+x&&s=%2B"
    status, body = raw_get(gateway.port, "/api" + below)
    assert status == 200 and json.loads(body)["target"] == "/echo" + below
    assert raw_get(gateway.port, "/strict" + below)[0] == 400
    # Dot segments mean "up" to every origin: refused on a raw route too.
    for target in ("/api/../x", "/api/a/%2e%2e/x", "/api/a/..%2fx", "/api/a%2f..%2fx"):
        assert raw_get(gateway.port, target)[0] == 400, target


def test_a_function_route_gets_the_same_treatment(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: GatewayThread = make_gateway("""
        [[routes]]
        prefix = "/fn"
        integration = "function"
        handler = "tests.integration.function_handlers:echo"
    """)
    reply = request(gateway.port, "GET", "/fn/%61%20b/c")
    assert json.loads(reply.body)["event"]["path"] == "/fn/a b/c"
    for target in ("/fn/../x", "/fn/a/%2e%2e/x", "/fn/a%2fb", "/fn//a", "/fn/./a"):
        assert raw_get(gateway.port, target)[0] == 400, target


def test_a_raw_path_function_gets_the_path_as_sent(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: GatewayThread = make_gateway("""
        [[routes]]
        prefix = "/fn"
        integration = "function"
        handler = "tests.integration.function_handlers:echo"
        raw_path = true
    """)
    status, body = raw_get(gateway.port, "/fn/a%2Fb//c")
    assert status == 201 and json.loads(body)["event"]["path"] == "/fn/a/b//c"
    assert raw_get(gateway.port, "/fn/a/%2e%2e/x")[0] == 400


def test_an_absolute_form_target_names_the_host(
    make_gateway,  # type: ignore[no-untyped-def]
    origin: OriginThread,
) -> None:
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
    """)
    status, body = raw_get(gateway.port, "http://media.example:8080/api/x?q=1")
    fields = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert status == 200 and json.loads(body)["target"] == "/echo/x?q=1"
    assert fields["x-forwarded-host"] == "media.example:8080"  # not the Host field's "gw"


@pytest.mark.parametrize(
    "target, status",
    [
        ("/pub/%zz", 400),
        ("/pub/%4", 400),
        ("*", 400),
        ("ftp://gw/pub/hello.txt", 400),
        ("http://gw/pub/hello.txt", 200),
        ("HTTP://gw", 404),
        ("http://gw/pub/../secret.txt", 400),
        ("/nowhere/../x", 400),
        ("/nowhere", 404),
    ],
)
def test_what_is_no_path_at_all(base_gateway: GatewayThread, target: str, status: int) -> None:
    assert raw_get(base_gateway.port, target)[0] == status
