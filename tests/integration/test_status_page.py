"""The status page in a real browser: headless Chromium from Debian's packages."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from .browser import CHROMIUM, Browser
from .support import (
    GatewayThread,
    make_sparse_file,
    open_stalled_download,
    read_access_log,
    request,
)

SAMPLE_MEDIA = Path(__file__).resolve().parents[2] / "sample_media"
VIDEO_URL = "/media/video/testsrc-h264-aac.mp4"
BIG_BYTES = 64 * 1024 * 1024

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (scripts/system-deps.sh test)"
)


@pytest.fixture
def gateway(make_gateway, tmp_path: Path) -> GatewayThread:  # type: ignore[no-untyped-def]
    big = tmp_path / "big"
    big.mkdir()
    make_sparse_file(big / "big.bin", BIG_BYTES)
    gateway: GatewayThread = make_gateway(f"""
        [server]
        access_log = "{tmp_path / "access.log"}"
        [[routes]]
        prefix = "/media"
        integration = "file"
        root = "{SAMPLE_MEDIA}"
        [[routes]]
        prefix = "/big"
        integration = "file"
        root = "{big}"
    """)
    return gateway


def test_the_page_files_are_served_with_a_strict_policy(gateway: GatewayThread) -> None:
    page = request(gateway.port, "GET", "/_mediaproxy/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert b'src="status.js"' in page.body
    assert request(gateway.port, "GET", "/_mediaproxy").status == 301
    assert request(gateway.port, "GET", "/_mediaproxy/other.js").status == 404


def test_overview_lists_routes_and_playable_samples(gateway: GatewayThread) -> None:
    overview = json.loads(request(gateway.port, "GET", "/_mediaproxy/api/overview").body)
    assert [route["prefix"] for route in overview["routes"]] == ["/media", "/big"]
    kinds = {sample["url"]: sample["kind"] for sample in overview["samples"]}
    assert kinds == {
        "/media/audio/sine-330hz.wav": "audio",
        "/media/audio/sine-523hz.mp3": "audio",
        "/media/video/smptebars-vp9-opus.webm": "video",
        VIDEO_URL: "video",
    }
    assert overview["pid"] == os.getpid()


async def check_page(browser: Browser, gateway: GatewayThread, screenshot: Path) -> None:
    await browser.navigate(f"{gateway.base_url}/_mediaproxy/")
    await browser.wait_for("document.querySelectorAll('#routes tbody tr').length === 2")
    assert await browser.evaluate("document.querySelectorAll('#players video').length") == 2
    assert await browser.evaluate("document.querySelectorAll('#players audio').length") == 2
    await browser.wait_for("document.getElementById('connection').textContent === 'live'")

    video = f"document.querySelector('video[data-url=\"{VIDEO_URL}\"]')"
    await browser.evaluate(f"{video}.play()")
    await browser.wait_for(f"{video}.currentTime > 0.2")
    middle_s = await browser.evaluate(f"{video}.currentTime = {video}.duration / 2")
    assert middle_s > 5  # a 15 s video
    await browser.wait_for(f"{video}.currentTime > {middle_s + 0.5}")

    stalled = open_stalled_download(gateway.port, "/big/big.bin")
    try:
        row = "document.querySelector('#streams tr[data-path=\"/big/big.bin\"]')"
        await browser.wait_for(f"!!{row}", timeout_s=5)
        cells = await browser.evaluate(f"[...{row}.cells].map(c => c.textContent)")
        assert cells[:5] == ["/big", "GET", "/big/big.bin", "127.0.0.1", "200"]
        assert cells[6].endswith("/s")
        await browser.screenshot(screenshot)
    finally:
        stalled.close()
    await browser.wait_for(f"!{row}", timeout_s=5)
    assert browser.exceptions == []


def test_the_page_plays_seeks_and_shows_live_streams(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    profile = tmp_path / "chromium"
    profile.mkdir()
    screenshot = tmp_path / "status.png"

    async def scenario() -> None:
        browser = await Browser.launch(profile)
        try:
            await check_page(browser, gateway, screenshot)
        finally:
            await browser.close()

    asyncio.run(scenario())
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    if "MEDIAPROXY_KEEP_SCREENSHOT" in os.environ:  # to look at it: a person's check
        shutil.copy(screenshot, os.environ["MEDIAPROXY_KEEP_SCREENSHOT"])
    video_lines = [
        line for line in read_access_log(tmp_path / "access.log") if line["path"] == VIDEO_URL
    ]
    assert any(line["status"] == 206 for line in video_lines), video_lines
