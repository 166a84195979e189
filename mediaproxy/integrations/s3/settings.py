"""The keys of an ``integration = "s3"`` route, checked at start-up.

The endpoint defaults to AWS's regional one and, with it, virtual-hosted addressing (AWS's
recommendation for new buckets); a configured endpoint (MinIO, Ceph, a LAN store) defaults to
path-style addressing, which needs no wildcard DNS. Credentials come from the environment
variables the route names, or else from the standard AWS chain (environment, shared
credentials file, container and instance metadata), resolved when first needed.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from mediaproxy.config import Table, from_environment
from mediaproxy.http.upstreams import Upstream
from mediaproxy.integrations.cache.settings import CacheSettings, read_cache_settings

ADDRESSING_STYLES = ("path", "virtual")
DEFAULT_REGION = "us-east-1"
# AWS's bucket naming rules (general purpose buckets): 3-63 characters, lower-case letters,
# digits, dots and hyphens, beginning and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,64}")
_CREDENTIAL_KEYS = ("access_key_id_env", "secret_access_key_env", "session_token_env")


@dataclass(frozen=True)
class StaticKeys:
    """Credentials read from the environment at start-up; never in ``repr`` or a log line."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""  # "$NAME and $NAME", for log lines that say what to fix


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    # Where connections go: for virtual-hosted addressing the bucket is part of the host.
    store: Upstream
    region: str = DEFAULT_REGION
    key_prefix: str = ""
    addressing_style: str = "path"
    keys: StaticKeys | None = None  # None: the standard AWS credential chain
    # AccessDenied answers 404, so the gateway does not tell which keys exist.
    hide_forbidden: bool = True
    listing: bool = False
    # The proxy's defaults (HttpProxySettings) and for the same reasons.
    max_idle_connections: int = 32
    connect_timeout_s: float = 10.0
    cache: CacheSettings | None = None  # opt-in: cache_dir and the other cache_* keys

    def object_target(self, key: str) -> str:
        """The request-target of an object (or, with key "", of the bucket itself).

        Every byte but the unreserved ones and "/" is percent-encoded, as SigV4's canonical
        URI for S3 wants it: the target is signed exactly as it is sent.
        """
        encoded = quote(key, safe="/~")
        return f"/{encoded}" if self.addressing_style == "virtual" else f"/{self.bucket}/{encoded}"

    @property
    def bucket_target(self) -> str:
        """The request-target of the bucket (for listings)."""
        return "/" if self.addressing_style == "virtual" else f"/{self.bucket}"


def read_settings(table: Table) -> S3Settings:
    if importlib.util.find_spec("botocore") is None:
        raise table.error("integration", "s3 routes need botocore: pip install 'mediaproxy[s3]'")
    bucket = table.string("bucket")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise table.error(
            "bucket",
            f"is not an S3 bucket name (3-63 lower-case letters, "
            f"digits, dots and hyphens): {bucket!r}",
        )
    region = table.string("region", DEFAULT_REGION)
    if not _REGION.fullmatch(region):
        raise table.error("region", f"is not a region name such as 'eu-west-1': {region!r}")
    endpoint_given = table.has("endpoint")
    endpoint_url = table.string("endpoint", f"https://s3.{region}.amazonaws.com")
    try:
        endpoint = Upstream.parse(endpoint_url, schemes=("http", "https"))
    except ValueError as error:
        raise table.error("endpoint", str(error)) from error
    if endpoint.base_path != "/":
        raise table.error(
            "endpoint",
            f"must be the store's root, without a path: "
            f"{endpoint_url!r} (objects go in key_prefix)",
        )
    style = table.choice(
        "addressing_style", ADDRESSING_STYLES, "path" if endpoint_given else "virtual"
    )
    if style == "virtual":
        if endpoint.scheme == "https" and "." in bucket:
            raise table.error(
                "addressing_style",
                f"bucket {bucket!r} has dots, which a "
                f"wildcard TLS certificate does not cover: "
                f'use "path"',
            )
        endpoint = Upstream(endpoint.scheme, f"{bucket}.{endpoint.host}", endpoint.port, "/")
    key_prefix = table.string("key_prefix", "")
    if key_prefix.startswith("/"):
        raise table.error("key_prefix", f"object keys do not start with '/': {key_prefix!r}")
    return S3Settings(
        bucket=bucket,
        store=endpoint,
        region=region,
        key_prefix=key_prefix,
        addressing_style=style,
        keys=_read_keys(table),
        hide_forbidden=table.boolean("hide_forbidden", S3Settings.hide_forbidden),
        listing=table.boolean("list", S3Settings.listing),
        max_idle_connections=table.integer(
            "max_idle_connections", S3Settings.max_idle_connections, maximum=4096
        ),
        connect_timeout_s=table.seconds("connect_timeout", S3Settings.connect_timeout_s),
        cache=read_cache_settings(table),
    )


def _read_keys(table: Table) -> StaticKeys | None:
    given = [key for key in _CREDENTIAL_KEYS if table.has(key)]
    if not given:
        return None
    for key in _CREDENTIAL_KEYS[:2]:
        if key not in given:
            raise table.error(
                key,
                f"is required when {given[0]} is set (or set none of "
                f"them to use the standard AWS credential chain)",
            )
    token = from_environment(table, "session_token_env") if "session_token_env" in given else None
    names = " and ".join(f"${table.string(key)}" for key in given)
    return StaticKeys(
        from_environment(table, "access_key_id_env"),
        from_environment(table, "secret_access_key_env"),
        token,
        names,
    )
