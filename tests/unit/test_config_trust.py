"""Config of limits and access: defaults, overrides, and every bad value stopping start-up
with the file and the key named (and never a secret echoed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaproxy.config import Access, Limits, load

from .support import GOOD_ROUTE, assert_refused, write

SECRET = "0123456789abcdef-secret"


def test_limits_default_to_none_and_routes_override_them(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            "[limits]\nmax_concurrent_streams = 50\n"
            + GOOD_ROUTE
            + "rate_limit_bytes_per_s = 500000\nrate_limit_after_bytes = 100000\n"
            "max_upload_bytes = 10\nmax_concurrent_streams = 5\n",
        )
    )
    assert (
        Limits().max_concurrent_streams,
        Limits().rate_limit_bytes_per_s,
        Limits().rate_limit_after_bytes,
        Limits().max_upload_bytes,
    ) == (0, 0, 0, 0)
    assert config.limits.max_concurrent_streams == 50
    limits = config.routes[0].limits
    assert (
        limits.max_concurrent_streams,
        limits.rate_limit_bytes_per_s,
        limits.rate_limit_after_bytes,
        limits.max_upload_bytes,
    ) == (5, 500_000, 100_000, 10)
    assert config.server.max_header_bytes == 65536


def test_a_route_turns_off_the_global_rate_limit_and_its_burst(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            "[limits]\nrate_limit_bytes_per_s = 500000\n"
            "rate_limit_after_bytes = 100000\n" + GOOD_ROUTE + "rate_limit_bytes_per_s = 0\n",
        )
    )
    assert (config.limits.rate_limit_bytes_per_s, config.limits.rate_limit_after_bytes) == (
        500_000,
        100_000,
    )
    limits = config.routes[0].limits
    assert (limits.rate_limit_bytes_per_s, limits.rate_limit_after_bytes) == (0, 0)


def test_access_defaults_to_open(tmp_path: Path) -> None:
    access = load(write(tmp_path, GOOD_ROUTE)).routes[0].access
    assert access == Access() and not access.restricted


def test_keys_and_secret_from_config_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_KEYS", " env-one , env-two ")
    monkeypatch.setenv("MP_SECRET", SECRET)
    route = GOOD_ROUTE + (
        'api_keys = ["file-key"]\napi_keys_env = "MP_KEYS"\n'
        'api_key_header = "Authorization-Key"\n'
        'signing_secret_env = "MP_SECRET"\n'
    )
    access = load(write(tmp_path, route)).routes[0].access
    assert access.api_keys == ("file-key", "env-one", "env-two")
    assert access.api_key_header == "Authorization-Key"
    assert access.signing_secret == SECRET.encode()
    assert "file-key" not in repr(access) and SECRET not in repr(access)


def test_a_demo_default_signs_while_the_variable_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = GOOD_ROUTE + (
        'signing_secret_env = "MP_DEMO_SECRET"\n'
        'signing_secret_env_default = "demo-secret-0123456789"\n'
    )
    monkeypatch.delenv("MP_DEMO_SECRET", raising=False)
    assert load(write(tmp_path, route)).routes[0].access.signing_secret == b"demo-secret-0123456789"
    monkeypatch.setenv("MP_DEMO_SECRET", " ")  # empty counts as unset, as everywhere
    assert load(write(tmp_path, route)).routes[0].access.signing_secret == b"demo-secret-0123456789"
    monkeypatch.setenv("MP_DEMO_SECRET", SECRET)
    assert load(write(tmp_path, route)).routes[0].access.signing_secret == SECRET.encode()


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("[limits]\nmax_concurrent_streams = -1\n", "limits.max_concurrent_streams", ">= 0"),
        (
            GOOD_ROUTE + f'signing_secret_env_default = "{SECRET}"\n',
            "routes[0].signing_secret_env_default",
            "only with signing_secret_env",
        ),
        (
            GOOD_ROUTE
            + 'signing_secret_env = "MP_SECRET_SET"\nsigning_secret_env_default = "short"\n',
            "routes[0].signing_secret_env_default",
            "got 5",
        ),  # checked even while the variable is set
        ("[limits]\nrate_limit_bytes_per_s = -5\n", "limits.rate_limit_bytes_per_s", ">= 0"),
        ("[limits]\nrate_limit_after_bytes = -5\n", "limits.rate_limit_after_bytes", ">= 0"),
        (
            "[limits]\nrate_limit_after_bytes = 5\n",
            "limits.rate_limit_after_bytes",
            "needs rate_limit_bytes_per_s",
        ),
        ("[limits]\nmax_upload_bytes = 1.5\n", "limits.max_upload_bytes", "an integer"),
        (GOOD_ROUTE + "max_upload_bytes = -1\n", "routes[0].max_upload_bytes", ">= 0"),
        ("[server]\nmax_header_bytes = 10\n", "server.max_header_bytes", ">= 1024"),
        (GOOD_ROUTE + "api_keys = []\n", "routes[0].api_keys", "non-empty array"),
        (GOOD_ROUTE + 'api_keys = "k"\n', "routes[0].api_keys", "non-empty array"),
        (GOOD_ROUTE + 'api_keys = ["ok", "has space-SECRETKEY"]\n', "routes[0].api_keys", "key #2"),
        (GOOD_ROUTE + 'api_keys = ["a,b"]\n', "routes[0].api_keys", "without commas"),
        (GOOD_ROUTE + 'api_keys = [""]\n', "routes[0].api_keys", "key #1 is empty"),
        (
            GOOD_ROUTE + 'api_keys_env = "MP_UNSET_VARIABLE"\n',
            "routes[0].api_keys_env",
            "MP_UNSET_VARIABLE is not set",
        ),
        (
            GOOD_ROUTE + 'api_keys_env = "MP_EMPTY"\n',
            "routes[0].api_keys_env",
            "MP_EMPTY is not set or is empty",
        ),
        (GOOD_ROUTE + 'api_keys_env = "MP_COMMAS"\n', "routes[0].api_keys_env", "key #2 is empty"),
        (GOOD_ROUTE + 'api_key_header = "X-Key"\n', "routes[0].api_key_header", "no api_keys"),
        (GOOD_ROUTE + "forward_api_key = true\n", "routes[0].forward_api_key", "no api_keys"),
        (
            GOOD_ROUTE + 'api_keys = ["k"]\nforward_api_key = 1\n',
            "routes[0].forward_api_key",
            "true or false",
        ),
        (
            GOOD_ROUTE + 'api_keys = ["k"]\napi_key_header = "X Key"\n',
            "routes[0].api_key_header",
            "not a header name",
        ),
        (GOOD_ROUTE + 'signing_secret = ""\n', "routes[0].signing_secret", "at least 16 bytes"),
        (GOOD_ROUTE + 'signing_secret = "short"\n', "routes[0].signing_secret", "got 5"),
        (
            GOOD_ROUTE + 'signing_secret_env = "MP_UNSET_VARIABLE"\n',
            "routes[0].signing_secret_env",
            "MP_UNSET_VARIABLE is not set",
        ),
        (
            GOOD_ROUTE + f'signing_secret = "{SECRET}"\nsigning_secret_env = "MP_EMPTY"\n',
            "routes[0].signing_secret_env",
            "not both",
        ),
        ('[limits]\nsigning_secret = "x"\n', "limits.signing_secret", "unknown key"),
    ],
)
def test_bad_limits_and_access_name_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, key: str, reason: str
) -> None:
    monkeypatch.delenv("MP_UNSET_VARIABLE", raising=False)
    monkeypatch.setenv("MP_EMPTY", " ")
    monkeypatch.setenv("MP_COMMAS", "a,,b")
    monkeypatch.setenv("MP_SECRET_SET", SECRET)
    error = assert_refused(write(tmp_path, text), key, reason)
    assert "SECRETKEY" not in str(error)
