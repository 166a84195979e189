"""[shared_state] and [[plans]]: defaults, and every bad value named by file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaproxy.config import ConfigError, Plan, SharedState, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(text)
    return path


def test_plans_and_shared_state_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAPROXY_TEST_PLAN_KEYS", "k2,k3")
    config = load(
        write(
            tmp_path,
            """
[[plans]]
name = "gold"
keys = ["k1"]
keys_env = "MEDIAPROXY_TEST_PLAN_KEYS"
requests_per_second = 2.5
bytes_per_day = 1000
[[plans]]
name = "free"
keys = ["k4"]
max_concurrent_streams = 2
""",
        )
    )
    assert config.shared_state == SharedState()
    assert config.plans == (
        Plan(
            name="gold",
            keys=("k1", "k2", "k3"),
            requests_per_second=2.5,
            burst=3,
            bytes_per_day=1000,
        ),
        Plan(name="free", keys=("k4",), max_concurrent_streams=2),
    )
    assert "k1" not in repr(config.plans)


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ('[shared_state]\nredis_url = "http://x"\n', "shared_state.redis_url", "redis://"),
        (
            '[shared_state]\non_shared_state_error = "maybe"\n',
            "shared_state.on_shared_state_error",
            "allow, deny",
        ),
        ("[shared_state]\ntimeout = 0\n", "shared_state.timeout", "positive"),
        ("[shared_state]\nquota_step_bytes = 10\n", "shared_state.quota_step_bytes", ">= 4096"),
        ("[shared_state]\nredis = 1\n", "shared_state.redis", "unknown key"),
        ("plans = 1\n", "plans", "array of tables"),
        ('[[plans]]\nkeys = ["k"]\n', "plans[0].name", "required"),
        ('[[plans]]\nname = "p"\n', "plans[0].keys", "keys or keys_env"),
        ('[[plans]]\nname = "p"\nkeys = ["a,b"]\n', "plans[0].keys", "key #1"),
        (
            '[[plans]]\nname = "p"\nkeys = ["k"]\nrequests_per_second = 0\n',
            "plans[0].requests_per_second",
            "positive",
        ),
        (
            '[[plans]]\nname = "p"\nkeys = ["k"]\nrequests_per_second = true\n',
            "plans[0].requests_per_second",
            "positive",
        ),
        (
            '[[plans]]\nname = "p"\nkeys = ["k"]\nburst = 5\n',
            "plans[0].burst",
            "needs requests_per_second",
        ),
        (
            '[[plans]]\nname = "p"\nkeys = ["k"]\nbytes_per_day = -1\n',
            "plans[0].bytes_per_day",
            ">= 0",
        ),
        (
            '[[plans]]\nname = "p"\nkeys = ["k"]\nbytes_per_week = 1\n',
            "plans[0].bytes_per_week",
            "unknown key",
        ),
        (
            '[[plans]]\nname = "p"\nkeys = ["k"]\n[[plans]]\nname = "p"\nkeys = ["j"]\n',
            "plans[1].name",
            "already the name of plans[0]",
        ),
        (
            '[[plans]]\nname = "p"\nkeys = ["k"]\n[[plans]]\nname = "q"\nkeys = ["k"]\n',
            "plans[1].keys",
            "already on plans[0]",
        ),
    ],
)
def test_bad_plans_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key and reason in caught.value.reason
    assert str(caught.value).startswith(f"{path.resolve()}: {key}: ")
    assert '"k"' not in str(caught.value)  # a key is never echoed


def test_a_reload_keeps_what_only_a_restart_can_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mediaproxy.server.app import restartless

    running = load(write(tmp_path, "[server]\nport = 8080\nshutdown_grace = 5\n"))
    loaded = load(write(tmp_path, "[server]\nport = 9090\nprocesses = 3\nshutdown_grace = 7\n"))
    kept = restartless(running, loaded)
    assert (kept.server.port, kept.server.processes, kept.server.shutdown_grace_s) == (8080, 1, 7)
    assert "[server] port, processes changed; that applies at the next start" in caplog.text
