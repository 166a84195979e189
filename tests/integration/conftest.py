"""Fixtures that start real gateways; see support.py for why they run in threads."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mediaproxy import config as config_module
from mediaproxy.config import ACCESS_LOG_OFF
from testbed.origin import OriginThread
from testbed.pgcluster import server_binaries, throwaway_cluster
from testbed.redisserver import RedisServer, redis_installed, throwaway_redis
from testbed.s3store import S3Store, moto_server

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
    """A throwaway PostgreSQL server for this test session (see pgcluster.py); its URL."""
    pytest.importorskip("psycopg")
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (scripts/system-deps.sh test installs it)")
    with throwaway_cluster(bindir) as url:
        yield url


@pytest.fixture(scope="session")
def s3_store() -> Iterator[S3Store]:
    """A real S3-compatible server (moto's, see s3store.py) with signatures enforced."""
    pytest.importorskip("moto")
    with moto_server() as store:
        yield store


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """A Redis server for this test session (see redisserver.py)."""
    if not redis_installed():
        pytest.skip("redis-server not installed (scripts/system-deps.sh test installs it)")
    with throwaway_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_session.flush()
    return redis_session.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, which it may kill and start again."""
    if not redis_installed():
        pytest.skip("redis-server not installed (scripts/system-deps.sh test installs it)")
    with throwaway_redis() as server:
        yield server
