"""Config validation: every bad file stops start-up with the file, the dotted key and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaproxy import config
from mediaproxy.config import ConfigError, Limits, load
from mediaproxy.server import eventloop

from .support import GOOD_ROUTE, assert_refused, write


def test_defaults_and_route_overrides(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD_ROUTE + "idle_timeout = 7\n"))
    assert config.server.port == 8080
    assert config.limits == Limits()
    (route,) = config.routes
    assert route.prefix == "/media"
    assert route.settings.root == tmp_path.resolve()
    assert route.limits.idle_timeout_s == 7
    assert route.limits.max_stream_duration_s == Limits().max_stream_duration_s


def test_admin_surfaces_default_to_on_and_public(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = load(write(tmp_path, GOOD_ROUTE)).server
    assert (server.status_page, server.metrics, server.admin_api_keys) == (True, True, ())
    monkeypatch.setenv("MEDIAPROXY_TEST_ADMIN", "k2, k3")
    server = load(
        write(
            tmp_path,
            '[server]\nmetrics = false\nadmin_api_keys = ["k1"]\n'
            'admin_api_keys_env = "MEDIAPROXY_TEST_ADMIN"\n',
        )
    ).server
    assert not server.metrics and server.admin_api_keys == ("k1", "k2", "k3")
    assert "k1" not in repr(server)


def test_route_inherits_global_limits(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[limits]\nmax_stream_duration = 60\n" + GOOD_ROUTE))
    assert config.routes[0].limits.max_stream_duration_s == 60


def test_relative_root_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "m.toml"
    path.write_text(GOOD_ROUTE.replace('root = "."', 'root = "../media"'))
    assert load(path).routes[0].settings.root == (tmp_path / "media").resolve()


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("[server]\nport = 70000\n", "server.port", "between 0 and 65535"),
        ('[server]\nport = "80"\n', "server.port", "must be an integer"),
        ("[server]\nprot = 80\n", "server.prot", "unknown key"),
        ("[limits]\nidle_timeout = -5\n", "limits.idle_timeout", "positive number of seconds"),
        ("[limits]\nidle_timeout = 0\n", "limits.idle_timeout", "positive number of seconds"),
        ("[limits]\nidle_timeout = nan\n", "limits.idle_timeout", "positive number of seconds"),
        ("[limits]\nidle_timeout = true\n", "limits.idle_timeout", "number of seconds"),
        ("[limits]\nbuffered_max_bytes = 0\n", "limits.buffered_max_bytes", ">= 1"),
        (
            GOOD_ROUTE.replace('root = "."', 'root = "missing"'),
            "routes[0].root",
            "not an existing directory",
        ),
        (GOOD_ROUTE.replace('root = "."\n', ""), "routes[0].root", "is required"),
        (GOOD_ROUTE + "idle_timeout = -1\n", "routes[0].idle_timeout", "positive"),
        (GOOD_ROUTE + "colour = 1\n", "routes[0].colour", "unknown key"),
        (GOOD_ROUTE.replace('"file"', '"ftp"'), "routes[0].integration", "must be one of"),
        (GOOD_ROUTE.replace('"/media"', '"media"'), "routes[0].prefix", "starting with '/'"),
        (GOOD_ROUTE.replace('"/media"', '"/healthz"'), "routes[0].prefix", "reserved"),
        # Prefixes no request could reach: routing compares them with the normalised path.
        (GOOD_ROUTE.replace('"/media"', '"/a/./b"'), "routes[0].prefix", "plain path"),
        (GOOD_ROUTE.replace('"/media"', '"/a/../b"'), "routes[0].prefix", "plain path"),
        (GOOD_ROUTE.replace('"/media"', '"/a;v=1"'), "routes[0].prefix", "plain path"),
        (GOOD_ROUTE.replace('"/media"', '"/caf\u00e9"'), "routes[0].prefix", "plain path"),
        (
            GOOD_ROUTE + GOOD_ROUTE.replace('"/media"', '"/media/"'),
            "routes[1].prefix",
            "already the prefix of routes[0]",
        ),
        ("routes = 3\n", "routes", "array of tables"),
        ("[mystery]\n", "mystery", "unknown key"),
        ('[server]\nevent_loop = "trio"\n', "server.event_loop", "must be one of"),
        ('[server]\npublic_url = "media.example.com"\n', "server.public_url", "https://"),
        ("[server]\npublic_url = 8443\n", "server.public_url", "must be a string"),
        ("[server]\nmetrics = 1\n", "server.metrics", "true or false"),
        ("[server]\nadmin_api_keys = []\n", "server.admin_api_keys", "non-empty array"),
        ('[server]\nadmin_api_keys = ["a,b"]\n', "server.admin_api_keys", "key #1"),
        (
            '[server]\nadmin_api_keys_env = "MEDIAPROXY_UNSET_VARIABLE"\n',
            "server.admin_api_keys_env",
            "is not set or is empty",
        ),
    ],
)
def test_bad_config_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    assert_refused(write(tmp_path, text), key, reason)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[server\n"))


def test_event_loop_uvloop_needs_uvloop_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[server]\nevent_loop = "uvloop"\n')
    assert load(path).server.event_loop == "uvloop"  # installed with the test extra
    monkeypatch.setattr(config, "uvloop_installed", lambda: False)
    assert_refused(path, "server.event_loop", "uvloop is not installed")
    assert eventloop.chosen("auto") == "asyncio" and eventloop.chosen("uvloop") == "uvloop"
