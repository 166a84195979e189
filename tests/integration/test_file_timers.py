"""The two timers end to end on the file integration, with small real timeouts (the timer
logic itself is tested on a fake clock in tests/unit/test_timers.py)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .support import (
    GatewayThread,
    drain,
    make_sparse_file,
    open_stalled_download,
    wait_for_no_streams,
)

BIG_BYTES = 64 * 1024 * 1024


@pytest.fixture(params=["true", "false"], ids=["sendfile", "reads"])
def gateway(make_gateway, tmp_path: Path, request) -> GatewayThread:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    root.mkdir()
    make_sparse_file(root / "big.bin", BIG_BYTES)
    gateway: GatewayThread = make_gateway(f"""
        [[routes]]
        prefix = "/idle"
        integration = "file"
        root = "{root}"
        idle_timeout = 0.2
        zero_copy = {request.param}
        [[routes]]
        prefix = "/total"
        integration = "file"
        root = "{root}"
        max_stream_duration = 0.3
        zero_copy = {request.param}
    """)
    return gateway


def test_a_client_that_stops_reading_is_cut_after_the_idle_timeout(gateway: GatewayThread) -> None:
    sock = open_stalled_download(gateway.port, "/idle/big.bin")
    started = time.monotonic()
    time.sleep(0.6)  # not reading: the server's writes stall, the idle timer fires
    received = drain(sock)
    sock.close()
    assert received < BIG_BYTES, "the download must be cut, not complete"
    assert time.monotonic() - started < 15
    wait_for_no_streams(gateway)


def test_a_download_that_outlasts_max_stream_duration_is_cut(gateway: GatewayThread) -> None:
    sock = open_stalled_download(gateway.port, "/total/big.bin")
    started = time.monotonic()
    received = drain(sock, pause_s=0.002)  # a steady reader, far slower than the whole file
    elapsed = time.monotonic() - started
    sock.close()
    assert received < BIG_BYTES
    assert 0.25 < elapsed < 15
    wait_for_no_streams(gateway)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_sees_a_cut_download_as_incomplete(gateway: GatewayThread, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--limit-rate",
            "8M",
            "-o",
            str(tmp_path / "out"),
            f"{gateway.base_url}/total/big.bin",
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 18, result.stderr  # CURLE_PARTIAL_FILE
    assert 0 < (tmp_path / "out").stat().st_size < BIG_BYTES
