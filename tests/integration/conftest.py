"""Fixtures that start real gateways; see support.py for why they run in threads."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mediaproxy import config as config_module

from .origin import OriginThread
from .support import GatewayThread


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[[str], GatewayThread]]:
    """Start gateways from TOML text (port forced to 0); all are stopped after the test."""
    started: list[GatewayThread] = []

    def make(toml_text: str) -> GatewayThread:
        path = tmp_path / f"gateway-{len(started)}.toml"
        path.write_text(textwrap.dedent(toml_text))
        loaded = config_module.load(path)
        loaded = replace(loaded, server=replace(loaded.server, port=0, address="127.0.0.1"))
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
