"""Fixtures that start real gateways; see support.py for why they run in threads."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mediaproxy import config as config_module
from mediaproxy.config import ACCESS_LOG_OFF

from .origin import OriginThread
from .support import GatewayThread


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[[str], GatewayThread]]:
    """Start gateways from TOML text (port forced to 0, access log off unless the text sets
    one); all are stopped after the test."""
    started: list[GatewayThread] = []

    def make(toml_text: str) -> GatewayThread:
        path = tmp_path / f"gateway-{len(started)}.toml"
        path.write_text(textwrap.dedent(toml_text))
        loaded = config_module.load(path)
        server = replace(loaded.server, port=0, address="127.0.0.1")
        if "access_log" not in toml_text:
            server = replace(server, access_log=ACCESS_LOG_OFF)  # keep test output readable
        loaded = replace(loaded, server=server)
        gateway = GatewayThread(loaded)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def origin() -> Iterator[OriginThread]:
    """A real HTTP origin on loopback (see origin.py), stopped after the test."""
    server = OriginThread()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for this test session; its URL.

    Debian's server binaries (scripts/system-deps.sh test installs them) run a fresh cluster
    in a temporary folder, reachable only on a Unix socket there, and it is removed after the
    session. initdb refuses to run as root, so as root the server runs as `postgres`.
    """
    pytest.importorskip("psycopg")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server not installed (scripts/system-deps.sh test installs it)")
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="mediaproxy-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    with socket.socket() as probe:  # names the socket file; no TCP listener is opened
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(run_as + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    options = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off"
    subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                             "-o", options, "-w", "start"],
                   check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@/postgres?host={base}&port={port}"
    finally:
        subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                 "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
