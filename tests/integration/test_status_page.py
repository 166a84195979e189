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
        max_stream_duration = 3600
        [[routes]]
        prefix = "/big"
        integration = "file"
        root = "{big}"
        [[routes]]
        prefix = "/exports/quarterly/orders-by-customer.csv"
        integration = "file"
        root = "{big}"
        max_stream_duration = 5430
    """)
    return gateway


# Nothing on the page may stick out to the right: the page never scrolls sideways.
STICKING_OUT = """[...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
    .map(e => `${e.tagName}#${e.id}.${e.className} ${e.textContent.slice(0, 40)}`)"""
# Paths break at their slashes: no piece between two slashes is split over two lines.
PATHS_UNBROKEN = """[...document.querySelectorAll('td.path')].every(td => {
    const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const range = document.createRange();
        range.selectNodeContents(node);
        if (range.getClientRects().length > 1) return false;
    }
    return true;
})"""


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
    assert [route["prefix"] for route in overview["routes"]] == [
        "/media", "/big", "/exports/quarterly/orders-by-customer.csv"]
    kinds = {sample["url"]: sample["kind"] for sample in overview["samples"]}
    assert kinds == {
        "/media/audio/sine-330hz.wav": "audio",
        "/media/audio/sine-523hz.mp3": "audio",
        "/media/video/smptebars-vp9-opus.webm": "video",
        VIDEO_URL: "video",
    }
    assert overview["pid"] == os.getpid()


async def check_page(browser: Browser, gateway: GatewayThread, screenshot: Path) -> None:
    await browser.set_viewport(1280, 1300)
    await browser.navigate(f"{gateway.base_url}/_mediaproxy/")
    await browser.wait_for("document.querySelectorAll('#routes tbody tr').length === 3")
    durations = await browser.evaluate(
        "[...document.querySelectorAll('#routes tbody tr')].map(r => r.cells[3].textContent)")
    assert durations == ["1 h", "15 min", "1 h 30 min 30 s"]
    assert await browser.evaluate("document.querySelectorAll('#players video').length") == 2
    assert await browser.evaluate("document.querySelectorAll('#players audio').length") == 2
    await browser.wait_for("document.getElementById('connection').textContent === 'live'")

    video = f"document.querySelector('video[data-url=\"{VIDEO_URL}\"]')"
    await browser.evaluate(f"{video}.play()")
    await browser.wait_for(f"{video}.currentTime > 0.2")
    middle_s = await browser.evaluate(f"{video}.currentTime = {video}.duration / 2")
    assert middle_s > 5  # a 15 s video
    await browser.wait_for(f"{video}.currentTime > {middle_s + 0.5}")

    stalled = open_stalled_download(gateway.port, "/big/big.bin", "Range: bytes=1000-\r\n")
    try:
        row = "document.querySelector('#streams tr[data-path=\"/big/big.bin\"]')"
        await browser.wait_for(f"!!{row}", timeout_s=5)
        cells = await browser.evaluate(f"[...{row}.cells].map(c => c.textContent)")
        assert cells[:7] == ["/big", "GET", "/big/big.bin", "127.0.0.1", "206",
                             "bytes=1000-", f"bytes 1000-{BIG_BYTES - 1}/{BIG_BYTES}"]
        assert cells[8].endswith("/s")
        for width, shot in ((1280, screenshot), (400, screenshot.with_name("narrow.png"))):
            await browser.set_viewport(width, 1300)
            assert await browser.evaluate("window.innerWidth") == width
            assert await browser.evaluate(STICKING_OUT) == [], f"at {width} px"
            assert await browser.evaluate("document.documentElement.scrollWidth") == width
            assert await browser.evaluate(PATHS_UNBROKEN), f"a path breaks mid-name at {width} px"
            await browser.screenshot(shot)
        # Narrow, every value keeps its label beside it.
        labels = await browser.evaluate(
            f"[...{row}.cells].map(c => getComputedStyle(c, '::before').content)")
        assert labels[:3] == ['"Route"', '"Method"', '"Path"']
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
    assert screenshot.with_name("narrow.png").read_bytes().startswith(b"\x89PNG")
    if "MEDIAPROXY_KEEP_SCREENSHOT" in os.environ:  # to look at them: a person's check
        kept = Path(os.environ["MEDIAPROXY_KEEP_SCREENSHOT"])
        shutil.copy(screenshot, kept)
        shutil.copy(screenshot.with_name("narrow.png"), kept.with_name("narrow-" + kept.name))
    video_lines = [line for line in read_access_log(tmp_path / "access.log") if line["path"] == VIDEO_URL]
    assert any(line["status"] == 206 for line in video_lines), video_lines
