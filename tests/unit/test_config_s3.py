"""The s3 route keys: defaults, addressing, credentials, and a clear error for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaproxy.config import ConfigError, load
from mediaproxy.http.upstreams import Upstream
from mediaproxy.integrations.s3.settings import S3Settings, StaticKeys

ROUTE = """
[[routes]]
prefix = "/media"
integration = "s3"
bucket = "media-bucket"
"""


def load_route(tmp_path: Path, extra: str = "") -> S3Settings:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(ROUTE + extra)
    settings: S3Settings = load(path).routes[0].settings
    return settings


def test_defaults_are_aws_with_virtual_hosted_addressing(tmp_path: Path) -> None:
    settings = load_route(tmp_path)
    assert settings == S3Settings(
        bucket="media-bucket",
        region="us-east-1",
        addressing_style="virtual",
        store=Upstream("https", "media-bucket.s3.us-east-1.amazonaws.com", 443, "/"),
    )
    assert settings.object_target("a b/ü+x.mp4") == "/a%20b/%C3%BC%2Bx.mp4"
    assert settings.bucket_target == "/"


def test_a_region_picks_its_endpoint(tmp_path: Path) -> None:
    settings = load_route(tmp_path, 'region = "eu-west-3"\n')
    assert settings.store.host == "media-bucket.s3.eu-west-3.amazonaws.com"


def test_an_endpoint_defaults_to_path_style(tmp_path: Path) -> None:
    settings = load_route(
        tmp_path,
        'endpoint = "http://minio.internal:9000"\n'
        'key_prefix = "videos/"\nhide_forbidden = false\n'
        "list = true\nconnect_timeout = 2\n",
    )
    assert settings.store == Upstream("http", "minio.internal", 9000, "/")
    assert settings.object_target("a.mp4") == "/media-bucket/a.mp4"
    assert settings.bucket_target == "/media-bucket"
    assert (
        settings.addressing_style,
        settings.key_prefix,
        settings.hide_forbidden,
        settings.listing,
        settings.connect_timeout_s,
    ) == ("path", "videos/", False, True, 2.0)


def test_virtual_addressing_on_an_endpoint(tmp_path: Path) -> None:
    settings = load_route(
        tmp_path, 'endpoint = "http://store.lan:9000"\naddressing_style = "virtual"\n'
    )
    assert settings.store == Upstream("http", "media-bucket.store.lan", 9000, "/")
    assert settings.object_target("a b.mp4") == "/a%20b.mp4"


def test_credentials_from_the_environment_never_in_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("SECRET", "very-secret")
    monkeypatch.setenv("TOKEN", "session")
    settings = load_route(
        tmp_path,
        'access_key_id_env = "KEY_ID"\n'
        'secret_access_key_env = "SECRET"\n'
        'session_token_env = "TOKEN"\n',
    )
    assert settings.keys == StaticKeys(
        "AKIAEXAMPLE", "very-secret", "session", "$KEY_ID and $SECRET and $TOKEN"
    )
    assert "very-secret" not in repr(settings) and "AKIAEXAMPLE" not in repr(settings)


@pytest.mark.parametrize(
    "extra, key, reason",
    [
        ('bucket = "Media"\n', "routes[0].bucket", "is not an S3 bucket name"),
        ('bucket = "a..b"\n', "routes[0].bucket", "is not an S3 bucket name"),
        ('region = "EU West"\n', "routes[0].region", "is not a region name"),
        ('endpoint = "ftp://store"\n', "routes[0].endpoint", "must be an http:// or https:// URL"),
        ('endpoint = "http://store/base/"\n', "routes[0].endpoint", "without a path"),
        (
            'addressing_style = "dns"\n',
            "routes[0].addressing_style",
            "must be one of path, virtual",
        ),
        ('bucket = "my.bucket"\n', "routes[0].addressing_style", 'use "path"'),
        ('key_prefix = "/videos/"\n', "routes[0].key_prefix", "do not start with '/'"),
        ('access_key_id_env = "KEY_ID"\n', "routes[0].secret_access_key_env", "is required when"),
        ('session_token_env = "T"\n', "routes[0].access_key_id_env", "is required when"),
        (
            'access_key_id_env = "UNSET_VARIABLE"\nsecret_access_key_env = "UNSET_VARIABLE"\n',
            "routes[0].access_key_id_env",
            "UNSET_VARIABLE is not set",
        ),
        ("list = 1\n", "routes[0].list", "must be true or false"),
        ('upstream = "http://x/"\n', "routes[0].upstream", "unknown key"),
    ],
)
def test_bad_values(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load_replacing(tmp_path, extra)
    assert caught.value.key == key, caught.value
    assert reason in caught.value.reason, caught.value


def _load_replacing(tmp_path: Path, extra: str) -> S3Settings:
    """The route with ``extra``; a bucket in ``extra`` replaces the route's."""
    base = ROUTE
    if extra.startswith("bucket"):
        base = base.replace('bucket = "media-bucket"\n', "")
    path = tmp_path / "mediaproxy.toml"
    path.write_text(base + extra)
    settings: S3Settings = load(path).routes[0].settings
    return settings
