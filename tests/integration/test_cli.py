"""The command line as a user runs it: a real process, real signals."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def mediaproxy(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediaproxy", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        **kwargs,
    )  # type: ignore[call-overload]


def test_default_config_is_valid() -> None:
    result = mediaproxy("--config", "conf/mediaproxy.toml", "--check-config")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_example_config_is_valid() -> None:
    result = mediaproxy("--config", "conf/example.toml", "--check-config")
    assert result.returncode == 0, result.stderr


def test_bad_config_exits_2_with_one_line_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[limits]\nidle_timeout = -1\n")
    result = mediaproxy("--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and "limits.idle_timeout" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_port_flag_exits_2() -> None:
    result = mediaproxy("--config", "conf/mediaproxy.toml", "--port", "99999", "--check-config")
    assert result.returncode == 2 and "--port" in result.stderr


@pytest.mark.parametrize("processes", [1, 2])
def test_a_busy_port_exits_2_with_one_line_naming_it_and_the_fix(
    processes: int, tmp_path: Path
) -> None:
    config = tmp_path / "busy.toml"
    config.write_text(f"[server]\nprocesses = {processes}\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = mediaproxy("--config", str(config), "--port", str(port))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0] and "--port" in lines[0]


@pytest.mark.parametrize("processes", [1, 2])
def test_an_address_not_on_this_machine_exits_2_with_one_line(
    processes: int, tmp_path: Path
) -> None:
    config = tmp_path / "foreign.toml"
    config.write_text(f"[server]\nprocesses = {processes}\n")
    result = mediaproxy("--config", str(config), "--address", "10.255.255.1", "--port", "0")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "10.255.255.1" in lines[0] and "--address" in lines[0]


def start_server(
    tmp_path: Path, root: Path, server_keys: str = ""
) -> tuple[subprocess.Popen[str], int, str]:
    """The running server, its port and its "listening" log line."""
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[server]\nshutdown_grace = 20\n{server_keys}[[routes]]\nprefix = "/f"\n'
        f'integration = "file"\nroot = "{root}"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mediaproxy", "--config", str(config), "--port", "0"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
            return process, int(match.group(1)), line
    raise AssertionError("no listening line")


def stop_server(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    assert process.stderr is not None
    process.stderr.close()


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_serves_on_the_configured_event_loop(tmp_path: Path, event_loop: str) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    process, port, line = start_server(tmp_path, tmp_path, f'event_loop = "{event_loop}"\n')
    try:
        assert line.rstrip().endswith(f"event loop {event_loop})")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /f/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while data := sock.recv(65536):
                reply += data
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nhello")
    finally:
        stop_server(process)


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_durations_have_sub_millisecond_resolution_under_uvloop(tmp_path: Path) -> None:
    """uvloop's loop.time() counts whole milliseconds, refreshed once per loop pass: measured
    with it, a fast response's ttfb is 0.0 or 1.0 ms exactly."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    log = tmp_path / "access.log"
    process, port, _ = start_server(
        tmp_path, tmp_path, f'event_loop = "uvloop"\naccess_log = "{log}"\n'
    )
    try:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /f/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while sock.recv(65536):
                    pass
        deadline = time.monotonic() + 10  # the last line is written just after the response
        while len(log.read_text().splitlines()) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop_server(process)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 20
    for field in ("ttfb_ms", "duration_ms"):
        values = [line[field] for line in lines]
        assert all(value > 0 for value in values), (field, values)
        assert any(abs(value - round(value)) > 0.0005 for value in values), (field, values)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1])
def test_a_signal_that_does_not_stop_leaves_the_server_running(tmp_path: Path, signum: int) -> None:
    """Sent the moment the start-up line is out, and with the access log off (nothing to
    reopen): never the signal's default action, which ends the process."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    process, port, _ = start_server(tmp_path, tmp_path, 'access_log = "off"\n')
    try:
        process.send_signal(signum)
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /f/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert process.poll() is None
    finally:
        stop_server(process)


@pytest.mark.slow
def test_sigterm_lets_a_running_download_finish_then_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    size = 8 * 1024 * 1024
    (root / "big.bin").write_bytes(b"x" * size)
    process, port, _ = start_server(tmp_path, root)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /f/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        received = len(sock.recv(65536))
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # New connections are refused while the running download drains.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        while data := sock.recv(1 << 20):
            received += len(data)
            time.sleep(0.001)  # a slowish client: the stream outlives the signal
        sock.close()
        assert received > size  # the whole body plus headers arrived
        assert process.wait(timeout=20) == 0
    finally:
        stop_server(process)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_run_first_screen_is_one_install_line_then_the_url() -> None:
    """What a newcomer sees: no echoed commands, no pip notes, no setuptools banner."""
    # Not under pytest's tmp_path: thousands of files there slow down every later session's
    # clean-up of old temporary folders, and concurrent sessions then trip over each other.
    venv = Path(tempfile.mkdtemp(prefix="mediaproxy-make-run-")) / "venv"
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"VENV={venv}", "ARGS=--port 0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        for line in process.stdout:
            seen.append(line.rstrip("\n"))
            if "listening on" in line:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        shutil.rmtree(venv.parent)
    assert seen[0] == f"mediaproxy: installing into {venv} (first run only)", seen
    if len(seen) == 3:  # a fresh clone: the seeking clip is made once, saying so
        assert seen[1].startswith("mediaproxy: generating sample_media/video/"), seen
    assert 2 <= len(seen) <= 3, "\n".join(seen)
    assert re.search(r"listening on http://127\.0\.0\.1:\d+ ", seen[-1]), seen
