"""Reloading the config without cutting anything: SIGHUP in one process and with workers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .support import (
    Server,
    drain,
    make_sparse_file,
    read_access_log,
    request,
    start_slow_download,
    wait_until,
)

BIG_BYTES = 24 * 1024 * 1024


def write_config(
    path: Path,
    root: Path,
    processes: int,
    extra_prefixes: tuple[str, ...] = (),
    broken: bool = False,
) -> None:
    routes = "".join(
        f'[[routes]]\nprefix = "{prefix}"\nintegration = "file"\nroot = "{root}"\n'
        for prefix in ("/files", *extra_prefixes)
    )
    path.write_text(f"""
[server]
port = 0
processes = {processes}
shutdown_grace = 10
access_log = "{root / "access.log"}"
{"no_such_key = 1" if broken else ""}
{routes}""")


class OneProcess:
    """`mediaproxy` with processes = 1 in a subprocess, its stderr collected."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mediaproxy", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, count: int = 1) -> re.Match[str]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, "".join(self.lines)))
            if len(found) >= count:
                return found[count - 1]
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in:\n{''.join(self.lines)}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self._reader.join(5)
        assert self.process.stderr is not None
        self.process.stderr.close()


def test_sighup_reloads_in_one_process_and_a_running_stream_finishes(tmp_path: Path) -> None:
    make_sparse_file(tmp_path / "big.bin", BIG_BYTES)
    (tmp_path / "small.txt").write_text("small\n")
    config = tmp_path / "mediaproxy.toml"
    write_config(config, tmp_path, processes=1)
    server = OneProcess(config)
    try:
        running = socket.create_connection(("127.0.0.1", server.port))
        running.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        running.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert request(server.port, "GET", "/more/small.txt").status == 404
        write_config(config, tmp_path, processes=1, extra_prefixes=("/more",))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for(r"config reloaded from")
        assert request(server.port, "GET", "/more/small.txt").body == b"small\n"
        assert drain(running) > BIG_BYTES  # started on the old config, finished on it
        running.close()

        write_config(config, tmp_path, processes=1, broken=True)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for(r"reload refused, the running config stays: .*no_such_key: unknown key")
        assert request(server.port, "GET", "/more/small.txt").status == 200

        # SIGUSR1 reopens the access log (logrotate moved it away).
        (tmp_path / "access.log").rename(tmp_path / "access.log.1")
        server.process.send_signal(signal.SIGUSR1)
        wait_until(lambda: (tmp_path / "access.log").exists())
        request(server.port, "GET", "/files/small.txt")
        wait_until(lambda: bool((tmp_path / "access.log").read_text()))
        assert read_access_log(tmp_path / "access.log")[-1]["path"] == "/files/small.txt"
        assert server.process.poll() is None
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_reload_under_load_with_workers_fails_no_request(tmp_path: Path) -> None:
    make_sparse_file(tmp_path / "big.bin", BIG_BYTES)
    (tmp_path / "small.txt").write_text("small\n")
    config = tmp_path / "mediaproxy.toml"
    write_config(config, tmp_path, processes=2)
    server = Server(config)
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                reply = request(server.port, "GET", "/files/small.txt", timeout=10)
                if reply.status != 200:
                    failures.append(f"status {reply.status}")
                served[0] += 1
            except OSError as error:
                failures.append(repr(error))

    try:
        download = start_slow_download(
            f"http://127.0.0.1:{server.port}/files/big.bin", 6 * 1024 * 1024, tmp_path / "out.bin"
        )
        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        first = set(server.worker_pids)
        time.sleep(0.5)
        for round_, prefixes in enumerate((("/more",), ("/more", "/again")), 1):
            write_config(config, tmp_path, processes=2, extra_prefixes=prefixes)
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_line("config reloaded(.|\n)*" * round_)
            time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(20)
        out, err = download.communicate(timeout=30)
        assert (download.returncode, out) == (0, "200"), err
        assert (tmp_path / "out.bin").stat().st_size == BIG_BYTES
        assert failures == [] and served[0] > 50, (failures[:5], served[0])
        assert request(server.port, "GET", "/again/small.txt").status == 200

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(lambda: all(map(gone, first)), 15)  # the first workers finished and left
    finally:
        stop.set()
        server.close()
