"""Private routes over real sockets: API keys, and signed URLs minted by ``mediaproxy sign``
and fetched by curl the way a browser or player would (HEAD, then ranges)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mediaproxy.http.signing import sign_query
from testbed.origin import OriginThread

from .support import GatewayThread, request

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

FILE_KEY = "file-key-0f9c2b7d"
ENV_KEY = "env-key-51a9e3c0"
SECRET = "signing-secret-7d41b0c9e2f6"
VIDEO_BYTES = 300_000


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "talk.mp4").write_bytes(os.urandom(VIDEO_BYTES))
    return tmp_path / "private"


@pytest.fixture
def config_text(media_root: Path, origin: OriginThread) -> str:
    return f"""
        [server]
        access_log = "{media_root.parent / "access.log"}"
        [[routes]]
        prefix = "/keyed"
        integration = "file"
        root = "{media_root}"
        api_keys = ["{FILE_KEY}"]
        api_keys_env = "MEDIAPROXY_TEST_KEYS"
        [[routes]]
        prefix = "/private"
        integration = "file"
        root = "{media_root}"
        signing_secret_env = "MEDIAPROXY_TEST_SECRET"
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
        signing_secret_env = "MEDIAPROXY_TEST_SECRET"
        [[routes]]
        prefix = "/public"
        integration = "file"
        root = "{media_root}"
    """


@pytest.fixture
def gateway(
    make_gateway: Callable[[str], GatewayThread], config_text: str, monkeypatch: pytest.MonkeyPatch
) -> GatewayThread:
    monkeypatch.setenv("MEDIAPROXY_TEST_KEYS", f"other-key,{ENV_KEY}")
    monkeypatch.setenv("MEDIAPROXY_TEST_SECRET", SECRET)
    return make_gateway(config_text)


def test_api_keys_from_the_file_and_the_environment(
    gateway: GatewayThread, media_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = gateway.port
    for key in (FILE_KEY, ENV_KEY):
        answer = request(port, "GET", "/keyed/talk.mp4", headers={"X-API-Key": key})
        assert answer.status == 200 and len(answer.body) == VIDEO_BYTES
    missing = request(port, "GET", "/keyed/talk.mp4")
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'ApiKey realm="mediaproxy", header="X-API-Key"'
    assert missing.body == b"401 Unauthorized\n"
    for wrong in (FILE_KEY + "x", FILE_KEY[:-1], "", ENV_KEY.upper()):
        refused = request(port, "GET", "/keyed/talk.mp4", headers={"X-API-Key": wrong})
        assert refused.status == 403 and refused.body == b"403 Forbidden\n"
        assert "www-authenticate" not in refused.headers
    # Refused before anything else: an anonymous client cannot even learn what exists.
    assert request(port, "GET", "/keyed/absent.mp4").status == 401
    assert request(port, "GET", "/keyed/absent.mp4", headers={"X-API-Key": FILE_KEY}).status == 404
    assert request(port, "GET", "/public/talk.mp4").status == 200
    access_log = (media_root.parent / "access.log").read_text()
    assert '"status":403' in access_log, "the access log must record refusals"
    logged = "\n".join(record.getMessage() for record in caplog.records) + access_log
    assert "refused" in logged
    for secret in (FILE_KEY, ENV_KEY, FILE_KEY[:-1], ENV_KEY.upper()):
        assert secret not in logged


def run_sign(config_path: Path, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`mediaproxy sign` for ``path``, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mediaproxy", "sign", "--config", str(config_path)]
        + ["--path", path, *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )


def mint(config_path: Path, path: str, *extra: str) -> str:
    result = run_sign(config_path, path, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@needs_curl
def test_a_url_minted_by_mediaproxy_sign_plays_in_curl(
    gateway: GatewayThread, media_root: Path, tmp_path: Path
) -> None:
    config_path = gateway.config.path
    url = mint(
        config_path, "/private/talk.mp4", "--expires-in", "600", "--base-url", gateway.base_url
    )
    assert url.startswith(f"{gateway.base_url}/private/talk.mp4?expires=")
    video = (media_root / "talk.mp4").read_bytes()
    probe = subprocess.run(["curl", "-sS", "--fail", "-I", url], capture_output=True, timeout=30)
    assert probe.returncode == 0 and b"200 OK" in probe.stdout  # HEAD, signed for GET
    middle = subprocess.run(
        ["curl", "-sS", "--fail", "-r", "150000-150099", url], capture_output=True, timeout=30
    )
    assert middle.returncode == 0 and middle.stdout == video[150000:150100]
    whole = subprocess.run(
        ["curl", "-sS", "--fail", "-o", str(tmp_path / "out"), url], capture_output=True, timeout=30
    )
    assert whole.returncode == 0 and (tmp_path / "out").read_bytes() == video
    # Another file under the same signature, or a parameter added: refused.
    for tampered in (url.replace("talk.mp4", "talk.mp3"), url + "&a=1"):
        assert (
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", tampered],
                capture_output=True,
                timeout=30,
            ).stdout
            == b"403"
        )


def test_the_signed_query_reaches_the_origin_without_our_parameters(gateway: GatewayThread) -> None:
    url = mint(gateway.config.path, "/api/x?b=2&a=1", "--base-url", "http://h")
    assert "&expires=" in url and "&signature=" in url
    answer = request(gateway.port, "GET", url.removeprefix("http://h"))
    assert answer.status == 200
    assert json.loads(answer.body)["target"] == "/echo/x?b=2&a=1"


def test_expired_malformed_and_missing_signatures(gateway: GatewayThread) -> None:
    path = "/private/talk.mp4"
    now = int(time.time())
    expired = sign_query(SECRET.encode(), "GET", path, now - 1)
    assert request(gateway.port, "GET", f"{path}?{expired}").status == 403
    valid = sign_query(SECRET.encode(), "GET", path, now + 60)
    assert request(gateway.port, "GET", f"{path}?{valid}").status == 200
    assert request(gateway.port, "POST", f"{path}?{valid}").status == 403  # signed for GET only
    for query in (
        "expires=abc&signature=x",
        f"expires={now + 60}&signature=" + "A" * 43,
        valid + "&expires=1",
        valid.replace("signature=", "signature=%41"),
        f"expires={now + 60}",
        "signature=" + "A" * 43,
    ):
        refused = request(gateway.port, "GET", f"{path}?{query}")
        assert refused.status == 403, query
        assert refused.body == b"403 Forbidden\n"
    missing = request(gateway.port, "GET", path)
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'SignedURL realm="mediaproxy"'


def test_sign_refuses_a_route_without_a_secret(gateway: GatewayThread) -> None:
    result = run_sign(gateway.config.path, "/public/talk.mp4")
    assert result.returncode == 2
    assert "route /public" in result.stderr and "no signing_secret" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("forward", [False, True])
def test_the_api_key_stays_at_the_gateway_unless_the_route_forwards_it(
    make_gateway: Callable[[str], GatewayThread], origin: OriginThread, forward: bool
) -> None:
    opt_in = "forward_api_key = true" if forward else ""
    gateway = make_gateway(f"""
        [[routes]]
        prefix = "/api"
        integration = "http_proxy"
        upstream = "{origin.url}echo/"
        api_keys = ["{FILE_KEY}"]
        api_key_header = "X-Gateway-Key"
        {opt_in}
        [[routes]]
        prefix = "/fn"
        integration = "function"
        handler = "tests.integration.function_handlers:echo"
        api_keys = ["{FILE_KEY}"]
        {opt_in}
    """)
    sent = {"x-gateway-key": FILE_KEY, "X-Other": "kept"}
    proxied = request(gateway.port, "GET", "/api/x", headers=sent)
    fields = {name.lower(): value for name, value in json.loads(proxied.body)["headers"]}
    assert fields["x-other"] == "kept"
    assert fields.get("x-gateway-key") == (FILE_KEY if forward else None)
    called = request(gateway.port, "GET", "/fn", headers={"X-API-Key": FILE_KEY})
    headers = json.loads(called.body)["event"]["headers"]
    assert {name.lower(): value for name, value in headers.items()}.get("x-api-key") == (
        FILE_KEY if forward else None
    )


def test_a_signed_url_signs_the_path_the_gateway_reads(gateway: GatewayThread) -> None:
    # An escaped unreserved character is the same path: minted either way, the URL is one.
    url = mint(gateway.config.path, "/%70rivate/talk.mp4", "--base-url", gateway.base_url)
    assert url.startswith(f"{gateway.base_url}/private/talk.mp4?")
    assert request(gateway.port, "GET", url.removeprefix(gateway.base_url)).status == 200
    query = url.partition("?")[2]
    assert request(gateway.port, "GET", f"/private/talk%2Emp4?{query}").status == 200
    refused = run_sign(gateway.config.path, "/public/../private/talk.mp4")
    assert refused.returncode == 2 and "would refuse it" in refused.stderr


def test_sign_addresses_the_public_url(tmp_path: Path, media_root: Path) -> None:
    config_path = tmp_path / "public.toml"
    config_path.write_text(
        f"""
        [server]
        public_url = "https://media.example.com/gw/"
        [[routes]]
        prefix = "/private"
        integration = "file"
        root = "{media_root}"
        signing_secret = "{SECRET}"
    """.replace("\n        ", "\n")
    )
    assert mint(config_path, "/private/talk.mp4").startswith(
        "https://media.example.com/gw/private/talk.mp4?expires="
    )
