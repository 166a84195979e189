"""s3 routes against a real S3-compatible server (moto's) that verifies every signature."""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import http.server
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mediaproxy.integrations.s3 import listing
from testbed.origin import pattern
from testbed.s3store import Keys, S3Store

from .support import GatewayThread, MakeGateway, get_and_head, request, route

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
) + bytes(4000)
BODY = pattern(0, 300_000)


@pytest.fixture(scope="module")
def objects(s3_store: S3Store) -> S3Store:
    s3_store.put("videos/clip.bin", BODY)
    s3_store.put("videos/typed.mp4", BODY[:5000], content_type="video/mp4")
    s3_store.put("videos/picture", PNG)
    s3_store.put("secret.txt", b"outside the prefix\n")
    s3_store.put("videos/sub dir/ü.txt", b"unicode key\n", content_type="text/plain")
    return s3_store


@pytest.fixture
def gateway(
    objects: S3Store, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayThread]:
    yield make_gateway(route(objects, objects.reader, monkeypatch, 'key_prefix = "videos/"'))


def test_an_object_streams_with_its_validators_and_no_store_internals(
    gateway: GatewayThread, objects: S3Store
) -> None:
    reply = get_and_head(gateway, "/s3/clip.bin")
    assert reply.status == 200
    assert hashlib.sha256(reply.body).digest() == hashlib.sha256(BODY).digest()
    assert reply.headers["content-length"] == str(len(BODY))
    assert reply.headers["accept-ranges"] == "bytes"
    stored = objects.client().head_object(Bucket=objects.bucket, Key="videos/clip.bin")
    assert reply.headers["etag"] == stored["ETag"]
    assert (
        reply.headers["last-modified"] == stored["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
    )
    assert not [name for name in reply.headers if name.startswith("x-amz")]
    assert "werkzeug" not in reply.headers.get("server", "").lower()


def test_the_object_type_is_the_stores_or_sniffed_the_same_for_get_head_and_ranges(
    gateway: GatewayThread,
) -> None:
    assert get_and_head(gateway, "/s3/typed.mp4").headers["content-type"] == "video/mp4"
    assert get_and_head(gateway, "/s3/picture").headers["content-type"] == "image/png"
    ranged = request(gateway.port, "GET", "/s3/picture", {"Range": "bytes=100-199"})
    assert (ranged.status, ranged.headers["content-type"]) == (206, "image/png")
    text = get_and_head(gateway, "/s3/sub%20dir/%C3%BC.txt")
    assert (text.status, text.body) == (200, b"unicode key\n")


def test_a_head_first_sniffs_the_objects_first_bytes(
    gateway: GatewayThread, objects: S3Store
) -> None:
    objects.put("videos/head-first", PNG)
    head = request(gateway.port, "HEAD", "/s3/head-first")
    assert (head.status, head.headers["content-type"]) == (200, "image/png")
    assert head.headers["content-length"] == str(len(PNG))
    ranged = request(gateway.port, "GET", "/s3/head-first", {"Range": "bytes=4000-"})
    assert (ranged.status, ranged.body) == (206, PNG[4000:])


def test_an_empty_object_is_typed_by_its_name_for_get_and_head(
    gateway: GatewayThread, objects: S3Store
) -> None:
    objects.put("videos/empty.txt", b"")
    head = request(gateway.port, "HEAD", "/s3/empty.txt")  # first: no body to sniff
    reply = get_and_head(gateway, "/s3/empty.txt")
    assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"", "0")
    assert head.headers["content-type"] == reply.headers["content-type"] == "text/plain"


def test_ranges_are_served_by_the_store(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "GET", "/s3/clip.bin", {"Range": "bytes=10-19"})
    assert (reply.status, reply.body) == (206, BODY[10:20])
    assert reply.headers["content-range"] == f"bytes 10-19/{len(BODY)}"
    last = request(gateway.port, "GET", "/s3/clip.bin", {"Range": "bytes=-1"})
    assert (last.status, last.body) == (206, BODY[-1:])
    beyond = request(gateway.port, "GET", "/s3/clip.bin", {"Range": f"bytes={len(BODY)}-"})
    assert beyond.status == 416
    assert beyond.headers["content-range"] == f"bytes */{len(BODY)}"


def test_preconditions_are_forwarded(gateway: GatewayThread) -> None:
    etag = request(gateway.port, "HEAD", "/s3/clip.bin").headers["etag"]
    unchanged = get_and_head(gateway, "/s3/clip.bin", {"If-None-Match": etag})
    assert (unchanged.status, unchanged.body, unchanged.headers["etag"]) == (304, b"", etag)
    since = get_and_head(
        gateway, "/s3/clip.bin", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}
    )
    assert since.status == 304
    assert request(gateway.port, "GET", "/s3/clip.bin", {"If-Match": '"other"'}).status == 412
    assert request(gateway.port, "GET", "/s3/clip.bin", {"If-Match": etag}).status == 200


def test_if_range_is_enforced_by_the_gateway(gateway: GatewayThread) -> None:
    head = request(gateway.port, "HEAD", "/s3/clip.bin").headers
    current = request(
        gateway.port, "GET", "/s3/clip.bin", {"Range": "bytes=0-9", "If-Range": head["etag"]}
    )
    assert (current.status, current.body) == (206, BODY[:10])
    for stale in ('"an-older-version"', "Thu, 01 Jan 1970 00:00:00 GMT"):
        reply = request(
            gateway.port, "GET", "/s3/clip.bin", {"Range": "bytes=0-9", "If-Range": stale}
        )
        assert (reply.status, len(reply.body)) == (200, len(BODY)), stale
        assert "content-range" not in reply.headers
    dated = request(
        gateway.port,
        "GET",
        "/s3/clip.bin",
        {"Range": "bytes=0-9", "If-Range": head["last-modified"]},
    )
    assert dated.status == 206


def test_download_suggests_the_file_name(gateway: GatewayThread) -> None:
    reply = get_and_head(gateway, "/s3/clip.bin?download")
    assert reply.headers["content-disposition"] == 'attachment; filename="clip.bin"'


@pytest.mark.parametrize(
    "path, status",
    [
        ("/s3/missing.bin", 404),
        ("/s3/../secret.txt", 400),
        ("/s3/%2e%2e/secret.txt", 400),
        ("/s3/a//b", 400),
        ("/s3/a%2F..%2F..%2Fsecret.txt", 400),
        ("/s3/%FF.bin", 400),
        ("/s3/", 404),  # a folder, and the route lists none
    ],
)
def test_unknown_keys_and_paths_out_of_the_prefix(
    gateway: GatewayThread, path: str, status: int
) -> None:
    assert request(gateway.port, "GET", path).status == status
    assert request(gateway.port, "HEAD", path).status == status


def test_only_get_and_head(gateway: GatewayThread) -> None:
    reply = request(gateway.port, "DELETE", "/s3/clip.bin")
    assert (reply.status, reply.headers["allow"]) == (405, "GET, HEAD")


def test_access_denied_is_404_unless_the_route_shows_forbidden(
    objects: S3Store, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden = make_gateway(route(objects, objects.stranger, monkeypatch))
    assert request(hidden.port, "GET", "/s3/videos/clip.bin").status == 404
    assert request(hidden.port, "HEAD", "/s3/videos/clip.bin").status == 404
    shown = make_gateway(route(objects, objects.stranger, monkeypatch, "hide_forbidden = false"))
    assert request(shown.port, "GET", "/s3/videos/clip.bin").status == 403
    assert request(shown.port, "HEAD", "/s3/videos/clip.bin").status == 403


@pytest.mark.parametrize(
    "keys, fix",
    [
        (
            lambda store: Keys(store.reader.access_key_id, "not-the-secret"),
            "secret access key from $TEST_S3_KEY and $TEST_S3_SECRET does not belong",
        ),
        (
            lambda store: Keys("AKIAUNKNOWNUNKNOWN00", "whatever"),
            "does not know the access key id from $TEST_S3_KEY and $TEST_S3_SECRET",
        ),
    ],
    ids=["wrong secret", "unknown key id"],
)
def test_wrong_credentials_are_502_and_the_log_says_what_to_fix(
    objects: S3Store,
    make_gateway: MakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    keys: Callable[[S3Store], Keys],
    fix: str,
) -> None:
    caplog.set_level(logging.INFO)
    gateway = make_gateway(route(objects, keys(objects), monkeypatch))
    for method in ("GET", "HEAD"):
        caplog.clear()
        reply = request(gateway.port, method, "/s3/videos/clip.bin")
        assert reply.status == 502
        assert "not-the-secret" not in reply.body.decode() + caplog.text
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(fix in message for message in warnings), warnings


def test_a_missing_bucket_is_404(
    objects: S3Store, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = make_gateway(
        route(objects, objects.writer, monkeypatch).replace(
            f'bucket = "{objects.bucket}"', 'bucket = "no-such-bucket"'
        )
    )
    assert request(gateway.port, "GET", "/s3/x").status == 404


# --- listings ---------------------------------------------------------------------------------


@pytest.fixture
def listed(
    objects: S3Store, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> GatewayThread:
    for name in ("a.txt", "b <&>.txt", "c.txt", "deeper/d.txt", "e.txt"):
        objects.put(f"folder/{name}", name.encode())
    monkeypatch.setattr(listing, "PAGE_KEYS", 2)  # five entries: three pages
    return make_gateway(route(objects, objects.reader, monkeypatch, "list = true"))


def test_a_listing_streams_every_page_as_json(listed: GatewayThread) -> None:
    reply = request(listed.port, "GET", "/s3/folder/", {"Accept": "application/json"})
    assert (reply.status, reply.headers["content-type"]) == (200, "application/json")
    document = json.loads(reply.body)
    assert document["path"] == "/s3/folder/"
    assert [(e["name"], e["type"]) for e in document["entries"]] == [
        ("a.txt", "file"),
        ("b <&>.txt", "file"),
        ("c.txt", "file"),
        ("deeper/", "folder"),
        ("e.txt", "file"),
    ]
    assert document["entries"][0]["size"] == 5
    assert "transfer-encoding" in reply.headers  # streamed, page after page


def test_a_listing_is_html_for_browsers(listed: GatewayThread) -> None:
    reply = request(
        listed.port, "GET", "/s3/folder/", {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    page = reply.body.decode()
    assert '<a href="b%20%3C%26%3E.txt">b &lt;&amp;&gt;.txt</a>' in page
    assert '<a href="deeper/">deeper/</a>' in page
    assert '<a href="../">' in page
    assert request(listed.port, "HEAD", "/s3/folder/").body == b""


def test_a_folder_without_its_slash_is_redirected(listed: GatewayThread) -> None:
    for path, location in (
        ("/s3", "/s3/"),
        ("/s3/folder", "/s3/folder/"),
        ("/s3/folder/deeper", "/s3/folder/deeper/"),
    ):
        for method in ("GET", "HEAD"):
            reply = request(listed.port, method, path)
            assert (reply.status, reply.headers["location"]) == (301, location), path
    assert request(listed.port, "GET", "/s3/folder/missing").status == 404
    assert request(listed.port, "HEAD", "/s3/folder/missing").status == 404


def test_a_listing_of_nothing_is_404_but_the_root_lists(listed: GatewayThread) -> None:
    assert request(listed.port, "GET", "/s3/no-such-folder/").status == 404
    root = request(listed.port, "GET", "/s3/", {"Accept": "application/json"})
    names = [e["name"] for e in json.loads(root.body)["entries"]]
    assert "folder/" in names and "secret.txt" in names
    assert '<a href="../">' not in request(listed.port, "GET", "/s3/").body.decode()


def test_api_keys_guard_an_s3_route_like_any_other(
    objects: S3Store, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = make_gateway(
        route(objects, objects.reader, monkeypatch, 'api_keys = ["k-0123456789abcdef"]')
    )
    assert request(gateway.port, "GET", "/s3/videos/typed.mp4").status == 401
    reply = request(
        gateway.port, "GET", "/s3/videos/typed.mp4", {"X-API-Key": "k-0123456789abcdef"}
    )
    assert (reply.status, reply.body) == (200, BODY[:5000])


def test_metrics_label_the_route(gateway: GatewayThread) -> None:
    request(gateway.port, "GET", "/s3/clip.bin")
    metrics = request(gateway.port, "GET", "/metrics").body.decode()
    assert 'mediaproxy_requests_total{integration="s3",route="/s3",status="200"}' in metrics


def test_a_route_with_its_own_keys_serves_without_loading_botocore(
    objects: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore is the credential chain's: a route whose keys it names does without it (a
    gateway process then holds none of botocore's modules and data)."""
    config = tmp_path / "mediaproxy.toml"
    config.write_text(
        '[server]\nport = 0\naccess_log = "off"\n' + route(objects, objects.reader, monkeypatch)
    )
    script = f"""
import asyncio, sys, urllib.request
from mediaproxy.config import load
from mediaproxy.server.app import start

async def main() -> None:
    running = start(load({str(config)!r}))
    url = f"http://127.0.0.1:{{running.port}}/s3/videos/typed.mp4"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    assert len(body) == 5000, len(body)
    await running.shutdown()
    print(sorted(name for name in sys.modules if name.split(".")[0] == "botocore"))

asyncio.run(main())
"""
    finished = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "[]"


# --- the standard AWS credential chain -------------------------------------------------------

CHAIN_ROUTE = """
    [[routes]]
    prefix = "/s3"
    integration = "s3"
    bucket = "{bucket}"
    endpoint = "{url}"
"""


@pytest.fixture
def aws_chain_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The chain sees only what a test puts in the environment: no files, no instance role."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_credentials_from_the_environment_chain(
    objects: S3Store,
    make_gateway: MakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    aws_chain_only: None,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", objects.reader.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", objects.reader.secret_access_key)
    gateway = make_gateway(CHAIN_ROUTE.format(bucket=objects.bucket, url=objects.url))
    assert request(gateway.port, "GET", "/s3/videos/typed.mp4").body == BODY[:5000]


def test_no_credentials_anywhere_is_502_and_says_where_to_put_them(
    objects: S3Store,
    make_gateway: MakeGateway,
    aws_chain_only: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = make_gateway(CHAIN_ROUTE.format(bucket=objects.bucket, url=objects.url))
    assert request(gateway.port, "GET", "/s3/videos/typed.mp4").status == 502
    assert "no credentials found in the AWS credential chain" in caplog.text


class CredentialEndpoint:
    """A container credentials endpoint (as ECS and EKS run one) handing out role credentials.

    Each answer expires in 12 minutes: inside botocore's 15-minute advisory window, so every
    use of them refreshes them (on the gateway's credential thread), and outside the
    10-minute mandatory one, so a failed refresh would not fail the request.
    """

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.served = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                credentials = endpoint.store.temporary_credentials()
                expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                    minutes=12
                )
                body = json.dumps(
                    {
                        "AccessKeyId": credentials["AccessKeyId"],
                        "SecretAccessKey": credentials["SecretAccessKey"],
                        "Token": credentials["SessionToken"],
                        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                )
                endpoint.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/credentials"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_expiring_credentials_from_the_chain_are_refreshed(
    objects: S3Store,
    make_gateway: MakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    aws_chain_only: None,
) -> None:
    endpoint = CredentialEndpoint(objects)
    try:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url)
        gateway = make_gateway(CHAIN_ROUTE.format(bucket=objects.bucket, url=objects.url))
        for _ in range(2):
            reply = request(gateway.port, "GET", "/s3/videos/typed.mp4")
            assert (reply.status, reply.body) == (200, BODY[:5000])
        # Resolved once, then refreshed before each use: three sets of credentials.
        assert endpoint.served >= 3
    finally:
        endpoint.stop()


def test_concurrent_requests_share_one_resolution_and_one_refresh(
    objects: S3Store,
    make_gateway: MakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    aws_chain_only: None,
) -> None:
    endpoint = CredentialEndpoint(objects)
    try:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url)
        gateway = make_gateway(CHAIN_ROUTE.format(bucket=objects.bucket, url=objects.url))
        with concurrent.futures.ThreadPoolExecutor(10) as clients:
            replies = list(
                clients.map(
                    lambda _: request(gateway.port, "GET", "/s3/videos/typed.mp4"), range(10)
                )
            )
        assert [reply.status for reply in replies] == [200] * 10
        # One resolution and one refresh that all ten waited for (a straggler may cause
        # another); one refresh per request would be eleven.
        assert endpoint.served <= 4, endpoint.served
    finally:
        endpoint.stop()
