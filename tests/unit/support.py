"""What several unit test modules share: writing a config file and checking its refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaproxy.config import ConfigError, load

GOOD_ROUTE = """
[[routes]]
prefix = "/media"
integration = "file"
root = "."
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(text)
    return path


def assert_refused(path: Path, key: str, reason: str) -> ConfigError:
    """Loading ``path`` fails naming the file, ``key`` and a reason containing ``reason``."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path.resolve()}: {key}: ")
    return caught.value
