"""The configuration: one TOML file read once into frozen dataclasses.

Everything is validated at start-up, so a running server never meets a bad setting. A
``ConfigError`` names the file, the dotted key and the reason on one line:

    conf/mediaproxy.toml: routes[1].idle_timeout: must be a positive number of seconds, got -5

Relative paths in the file are resolved against the file's own folder, so a config works from
any working directory. Each integration's own keys are read by its own module, which
``KINDS`` names; adding an integration is its module and one entry there.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from mediaproxy.http import paths
from mediaproxy.http.upstreams import PublicUrl

# `compress_min_bytes`: a body below 1 KiB fits one TCP segment compressed or not, so gzip gains
# no round trip there and costs the Content-Length. nginx's gzip_min_length is the same knob
# (its default, 20 bytes, only keeps empty bodies from growing).
COMPRESS_MIN_BYTES = 1024
RESERVED_PREFIXES = ("/healthz", "/metrics", "/_mediaproxy")
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


@dataclass(frozen=True)
class Kind:
    """One integration, as a route names it in ``integration = "..."``.

    Its modules are named, not imported: a gateway loads only the integrations its routes use
    (one that serves files never carries sqlite3 or botocore).
    """

    # "module:function" reading the route's own keys (a Table) into its settings dataclass.
    settings: str
    # "module:Class", the Integration subclass that serves the route.
    integration: str
    # Generated text compresses well: `compress` defaults to true for such integrations only.
    compress: bool = False
    # An integration that hands the path on to someone else may take it as sent (raw_path).
    raw_path: bool = False

    def read_settings(self, table: Table) -> Any:
        return resolve(self.settings)(table)


# Every integration, one line each.
KINDS: dict[str, Kind] = {
    "file": Kind(
        "mediaproxy.integrations.file:read_settings", "mediaproxy.integrations.file:FileIntegration"
    ),
    "http_proxy": Kind(
        "mediaproxy.integrations.http_proxy.settings:read_settings",
        "mediaproxy.integrations.http_proxy.route:HttpProxyIntegration",
        raw_path=True,
    ),
    "csv_export": Kind(
        "mediaproxy.integrations.csv_export:read_settings",
        "mediaproxy.integrations.csv_export:CsvExportIntegration",
        compress=True,
    ),
    "function": Kind(
        "mediaproxy.integrations.function:read_settings",
        "mediaproxy.integrations.function:FunctionIntegration",
        compress=True,
        raw_path=True,
    ),
    "s3": Kind(
        "mediaproxy.integrations.s3.settings:read_settings",
        "mediaproxy.integrations.s3.integration:S3Integration",
    ),
}


def resolve(name: str) -> Any:
    """What ``"package.module:attribute"`` names, importing the module if need be."""
    module_name, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


class ConfigError(Exception):
    """A setting that stops start-up: ``file: dotted.key: reason``."""

    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        self.path, self.key, self.reason = str(path), key, reason
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


@dataclass(frozen=True)
class Limits:
    """The two timers every stream obeys, the buffered-mode ceilings, and the admission limits.

    Defaults are the managed gateway's own: API Gateway streams for at most 15 minutes, cuts a
    stream idle for 5 minutes, buffers at most 10 MB and waits 29 s for a buffered integration.

    The admission limits are 0, meaning none, by default, as nginx's are (``limit_conn`` and
    ``limit_rate`` are off until configured, ``limit_rate_after`` is 0): streams are bounded in
    memory whatever their size, so only the operator knows what to ration. Set globally,
    ``max_concurrent_streams`` caps the whole gateway; set on a route, that route alone.
    """

    max_stream_duration_s: float = 900.0
    idle_timeout_s: float = 300.0
    buffered_max_bytes: int = 10 * 1024 * 1024
    buffered_timeout_s: float = 29.0
    max_concurrent_streams: int = 0  # beyond it: 503 with Retry-After
    rate_limit_bytes_per_s: int = 0  # per connection, like nginx limit_rate
    rate_limit_after_bytes: int = 0  # sent unpaced first, like nginx limit_rate_after
    max_upload_bytes: int = 0  # request body beyond it: 413


# TOML key -> Limits field; the file speaks seconds without a suffix, the code with one.
_LIMIT_KEYS = {
    "max_stream_duration": "max_stream_duration_s",
    "idle_timeout": "idle_timeout_s",
    "buffered_max_bytes": "buffered_max_bytes",
    "buffered_timeout": "buffered_timeout_s",
    "max_concurrent_streams": "max_concurrent_streams",
    "rate_limit_bytes_per_s": "rate_limit_bytes_per_s",
    "rate_limit_after_bytes": "rate_limit_after_bytes",
    "max_upload_bytes": "max_upload_bytes",
}
# The integer limits and their least value; the rest are seconds. 0 means "no limit".
_INTEGER_LIMIT_MINIMUMS = {
    "buffered_max_bytes": 1,
    "max_concurrent_streams": 0,
    "rate_limit_bytes_per_s": 0,
    "rate_limit_after_bytes": 0,
    "max_upload_bytes": 0,
}


ACCESS_LOG_STDERR = "stderr"
ACCESS_LOG_OFF = "off"


@dataclass(frozen=True)
class ServerConfig:
    address: str = "127.0.0.1"
    port: int = 8080
    # Time running streams get to finish after SIGTERM; Kubernetes' default grace is 30 s.
    shutdown_grace_s: float = 25.0
    # Request line plus headers; Tornado's default. Beyond it: 414 if the request line alone
    # does not fit, else 431, then the connection is closed.
    max_header_bytes: int = 65536
    # Time for a request's header block to arrive (from the connection's start, or from the
    # first byte of a kept-alive connection's next request). nginx's client_header_timeout is
    # 60 s; half of it still suits any real client and holds slow-header attackers half as long.
    header_timeout_s: float = 30.0
    # Open client connections per process; 0: no cap. Beyond it new connections are closed at
    # once. nginx's worker_connections (512 by default) is the same idea.
    max_client_connections: int = 0
    # Worker processes sharing the port; 0 means one per core.
    processes: int = 1
    # "stderr", "off", or a file the JSON lines are appended to.
    access_log: str = ACCESS_LOG_STDERR
    # The status page and /metrics: on by default, showing public routes only. With admin
    # keys, both ask for one (HTTP Basic password or Bearer token) and show every route.
    status_page: bool = True
    metrics: bool = True
    admin_api_keys: tuple[str, ...] = field(default=(), repr=False)
    # "auto": uvloop when installed (the uvloop extra), else asyncio's; or either by name.
    event_loop: str = "auto"
    # Loaded (and so checked) once at start-up; None serves plain HTTP.
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    # Where clients reach the gateway: rewritten Locations and X-Forwarded-Host/-Proto (and
    # Forwarded's host and proto) use it instead of the request's Host and scheme.
    public_url: PublicUrl | None = None


@dataclass(frozen=True)
class Access:
    """Who may use a route: anyone (the default), or holders of an API key or a signed URL.

    With both kinds configured either one admits. Secrets stay out of ``repr``, and so out of
    any log line or traceback that prints a route.
    """

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_key_header: str = "X-API-Key"
    signing_secret: bytes | None = field(default=None, repr=False)
    # The key header is the gateway's credential: it never reaches an origin or a function
    # unless the route says so (an origin that checks the same key itself).
    forward_api_key: bool = False

    @property
    def restricted(self) -> bool:
        return bool(self.api_keys) or self.signing_secret is not None


@dataclass(frozen=True)
class Route:
    prefix: str
    integration: str
    limits: Limits
    settings: Any  # the integration's own dataclass, e.g. FileSettings
    index: int  # position in the file, for error messages
    compress: bool = False  # gzip/zstd for compressible types when the client accepts it
    # A body of known length below this goes uncompressed (nginx's gzip_min_length).
    compress_min_bytes: int = COMPRESS_MIN_BYTES
    access: Access = field(default_factory=Access)
    # Pass the path on as sent ('%2F', '\\', '//' included) instead of refusing it (400);
    # routing and access checks still use the normalised path (mediaproxy.http.paths).
    raw_path: bool = False


SHARED_STATE_POLICIES = ("allow", "deny")


@dataclass(frozen=True)
class SharedState:
    """Where usage plans keep their counts: this instance's memory (the default), or a Redis
    every instance shares, so a plan holds for the whole fleet."""

    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    # When Redis cannot be reached: admit (and count nothing) or refuse with 503.
    on_shared_state_error: str = "allow"
    # A Redis call that takes longer is a failure: on loopback or a LAN one takes well under a
    # millisecond, and a request must not wait long on a dead server.
    timeout_s: float = 0.25
    # A stream's leased slot expires this long after its instance stopped renewing it (a
    # crashed instance's slots come back); renewed every third of it.
    lease_s: float = 30.0
    # Bytes are counted against quotas in steps of this size, reserved before they are sent:
    # a download overruns its quota by at most one step.
    quota_step_bytes: int = 1024 * 1024
    key_prefix: str = "mediaproxy:"  # names in Redis start with it (several gateways, one Redis)


@dataclass(frozen=True)
class Plan:
    """A usage plan (API Gateway's): the API keys on it, each with its own rate, quotas and
    stream cap. A route still decides which keys it admits; 0 means no limit."""

    name: str
    keys: tuple[str, ...] = field(repr=False)
    requests_per_second: float = 0.0
    burst: int = 0  # requests at once after a quiet period
    bytes_per_day: int = 0  # UTC calendar day
    bytes_per_month: int = 0  # UTC calendar month
    max_concurrent_streams: int = 0  # per key; beyond: 429


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: Limits = field(default_factory=Limits)
    routes: tuple[Route, ...] = ()
    shared_state: SharedState = field(default_factory=SharedState)
    plans: tuple[Plan, ...] = ()


_MISSING: Any = object()
T = TypeVar("T")


class Table:
    """One TOML table being read: typed getters that remember the keys they consumed.

    ``finish()`` then refuses whatever key nobody asked for, so a typo never passes silently.
    """

    def __init__(self, data: Mapping[str, Any], path: Path, dotted: str) -> None:
        self._data, self.path, self.dotted = data, path, dotted
        self._consumed: set[str] = set()

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, f"{self.dotted}.{key}" if self.dotted else key, reason)

    def has(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        self._consumed.add(key)
        if key not in self._data:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        value = self._data[key]
        # bool is an int in Python; TOML keeps them apart and so do we.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(key, f"must be {kind_name}, got {value!r}")
        return value

    def string(self, key: str, default: str = _MISSING) -> str:
        value: str = self._get(key, default, (str,), "a string")
        return value

    def boolean(self, key: str, default: bool = _MISSING) -> bool:
        value: bool = self._get(key, default, (bool,), "true or false")
        return value

    def integer(
        self, key: str, default: int = _MISSING, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value: int = self._get(key, default, (int,), "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise self.error(key, f"must be {bound}, got {value}")
        return value

    def seconds(self, key: str, default: float = _MISSING) -> float:
        value = self._get(key, default, (int, float), "a number of seconds")
        if not (math.isfinite(value) and value > 0):
            raise self.error(key, f"must be a positive number of seconds, got {value!r}")
        return float(value)

    def choice(self, key: str, choices: tuple[str, ...], default: str = _MISSING) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def directory(self, key: str) -> Path:
        """A folder that exists, relative to the config file's folder."""
        path = (self.path.parent / self.string(key)).resolve()
        if not path.is_dir():
            raise self.error(key, f"{path} is not an existing directory")
        return path

    def file(self, key: str) -> Path:
        """A file that exists, relative to the config file's folder."""
        path = (self.path.parent / self.string(key)).resolve()
        if not path.is_file():
            raise self.error(key, f"{path} is not an existing file")
        return path

    def raw(self, key: str) -> Any:
        """The value as TOML gave it (None when absent), for a caller that checks it itself."""
        self._consumed.add(key)
        return self._data.get(key)

    def names(self) -> list[str]:
        """Every key of the table, for tables whose keys are the user's names."""
        return list(self._data)

    def table(self, key: str) -> Table:
        value = self._get(key, {}, (dict,), "a table")
        return Table(value, self.path, f"{self.dotted}.{key}" if self.dotted else key)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._consumed)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _read_limits(table: Table, base: Limits) -> Limits:
    """Read whichever ``[limits]`` keys ``table`` sets, on top of ``base``."""
    overrides: dict[str, Any] = {}
    for key, attribute in _LIMIT_KEYS.items():
        if table.has(key):
            if key in _INTEGER_LIMIT_MINIMUMS:
                overrides[attribute] = table.integer(key, minimum=_INTEGER_LIMIT_MINIMUMS[key])
            else:
                overrides[attribute] = table.seconds(key)
    limits = replace(base, **overrides)
    if limits.rate_limit_after_bytes and not limits.rate_limit_bytes_per_s:
        if table.has("rate_limit_after_bytes"):
            raise table.error(
                "rate_limit_after_bytes",
                "needs rate_limit_bytes_per_s (the rate that applies after the burst)",
            )
        # A route turning the inherited rate off: the inherited burst means nothing alone.
        limits = replace(limits, rate_limit_after_bytes=0)
    return limits


def _read_access_log(table: Table) -> str:
    """ "stderr", "off", or an absolute path whose folder exists."""
    value = table.string("access_log", ACCESS_LOG_STDERR)
    if value in (ACCESS_LOG_STDERR, ACCESS_LOG_OFF):
        return value
    path = (table.path.parent / value).resolve()
    if not path.parent.is_dir():
        raise table.error(
            "access_log",
            f'{path.parent} is not an existing directory (use "stderr", "off" or a file path)',
        )
    return str(path)


# Older versions are refused: RFC 8996 deprecates TLS 1.0 and 1.1.
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _refuse_password() -> str:
    raise ValueError(
        "encrypted private keys are not supported (no one could type the "
        "passphrase); decrypt it with `openssl pkey`"
    )


def _read_tls(table: Table) -> ssl.SSLContext | None:
    """A server context from ``tls_certificate`` and ``tls_key``, or None when neither is set.

    Loading it here means a missing file, a certificate that is not one, or a key that does
    not belong to it stops start-up with the key named, not the first handshake.
    """
    keys = ("tls_certificate", "tls_key")
    given = [key for key in keys if table.has(key)]
    if not given:
        for setting in ("tls_min_version", "tls_ciphers"):
            if table.has(setting):
                raise table.error(setting, "applies only with tls_certificate and tls_key")
        return None
    if len(given) == 1:
        (missing,) = set(keys) - set(given)
        raise table.error(missing, f"is required when {given[0]} is set")
    certificate, key = table.file("tls_certificate"), table.file("tls_key")
    try:
        # The certificate on its own first, so a bad one is not blamed on the key.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=certificate)
    except (ssl.SSLError, OSError) as error:
        raise table.error(
            "tls_certificate", f"{certificate} holds no PEM certificate ({error})"
        ) from error
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, key, password=_refuse_password)
    except ValueError as error:
        raise table.error("tls_key", f"{key}: {error}") from error
    except (ssl.SSLError, OSError) as error:
        mismatch = getattr(error, "reason", None) == "KEY_VALUES_MISMATCH"
        reason = "does not match the certificate" if mismatch else "holds no PEM private key"
        raise table.error("tls_key", f"{key} {reason} ({error})") from error
    version = table.string("tls_min_version", "1.2")
    if version not in TLS_VERSIONS:
        raise table.error(
            "tls_min_version", f"must be one of {', '.join(TLS_VERSIONS)}, got {version!r}"
        )
    context.minimum_version = TLS_VERSIONS[version]
    if table.has("tls_ciphers"):
        ciphers = table.string("tls_ciphers")
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError as error:
            raise table.error(
                "tls_ciphers", f"OpenSSL selects no cipher from {ciphers!r} ({error})"
            ) from error
    return context


def _read_server(table: Table) -> ServerConfig:
    server = ServerConfig(
        address=table.string("address", ServerConfig.address),
        port=table.integer("port", ServerConfig.port, maximum=65535),
        shutdown_grace_s=table.seconds("shutdown_grace", ServerConfig.shutdown_grace_s),
        max_header_bytes=table.integer(
            "max_header_bytes", ServerConfig.max_header_bytes, minimum=1024
        ),
        header_timeout_s=table.seconds("header_timeout", ServerConfig.header_timeout_s),
        max_client_connections=table.integer(
            "max_client_connections", ServerConfig.max_client_connections
        ),
        processes=table.integer("processes", ServerConfig.processes, maximum=1024),
        access_log=_read_access_log(table),
        status_page=table.boolean("status_page", ServerConfig.status_page),
        metrics=table.boolean("metrics", ServerConfig.metrics),
        admin_api_keys=_read_api_keys(table, "admin_api_keys"),
        tls=_read_tls(table),
        event_loop=_read_event_loop(table),
        public_url=_read_public_url(table),
    )
    table.finish()
    return server


def _read_public_url(table: Table) -> PublicUrl | None:
    if not table.has("public_url"):
        return None
    try:
        return PublicUrl.parse(table.string("public_url"))
    except ValueError as error:
        raise table.error("public_url", str(error)) from error


def _read_event_loop(table: Table) -> str:
    value = table.choice("event_loop", EVENT_LOOPS, ServerConfig.event_loop)
    if value == "uvloop" and not uvloop_installed():
        raise table.error(
            "event_loop",
            "uvloop is not installed (pip install 'mediaproxy[uvloop]', or use \"auto\")",
        )
    return value


def _is_plain_prefix(prefix: str) -> bool:
    """Whether requests can reach ``prefix``: routing compares prefixes with the normalised
    path (mediaproxy.http.paths), so a prefix must be its own normal form, in every reading."""
    if not prefix.startswith("/") or "%" in prefix:
        return False
    read = paths.normalise_path(prefix)
    return (
        read.text == prefix
        and read.refusal is None
        and paths.lenient_segments(read) == paths.prefix_segments(prefix)
    )


def normalize_prefix(prefix: str) -> str:
    """'/media/' and '/media' name the same route; '/' stays '/'."""
    return "/" + prefix.strip("/") if prefix.strip("/") else "/"


# A key travels in a header and an environment variable lists keys separated by commas.
_API_KEY = re.compile(r"[!-+\--~]+")  # visible ASCII except the comma
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
# HMAC-SHA256 keys shorter than this can be brute-forced offline from a single signed URL.
MIN_SIGNING_SECRET_BYTES = 16


def from_environment(table: Table, key: str) -> str:
    """The value of the environment variable that ``key`` names; unset or empty is an error."""
    variable = table.string(key)
    value = os.environ.get(variable, "").strip()
    if not value:
        raise table.error(key, f"environment variable {variable} is not set or is empty")
    return value


def _read_api_keys(table: Table, name: str = "api_keys") -> tuple[str, ...]:
    """Keys from ``name`` and from the variable ``name_env`` names (comma-separated)."""
    keys: dict[str, list[str]] = {}
    raw = table.raw(name)
    if raw is not None:
        if not isinstance(raw, list) or not raw or not all(isinstance(k, str) for k in raw):
            raise table.error(name, "must be a non-empty array of strings")
        keys[name] = raw
    if table.has(f"{name}_env"):
        keys[f"{name}_env"] = [
            key.strip() for key in from_environment(table, f"{name}_env").split(",")
        ]
    for origin, listed in keys.items():
        for position, key in enumerate(listed, 1):
            if not _API_KEY.fullmatch(key):
                # Never echo the key itself: config errors are printed and logged.
                raise table.error(
                    origin,
                    f"key #{position} is empty or has characters other "
                    f"than visible ASCII without commas",
                )
    return tuple(key for listed in keys.values() for key in listed)


def _read_access(table: Table) -> Access:
    api_keys = _read_api_keys(table)
    header = table.string("api_key_header", Access.api_key_header)
    if table.has("api_key_header") and not api_keys:
        raise table.error("api_key_header", "is set but the route has no api_keys(_env)")
    if not _HEADER_NAME.fullmatch(header):
        raise table.error("api_key_header", f"is not a header name: {header!r}")
    if table.has("signing_secret") and table.has("signing_secret_env"):
        raise table.error(
            "signing_secret_env", "set signing_secret or signing_secret_env, not both"
        )
    forward_api_key = table.boolean("forward_api_key", Access.forward_api_key)
    if forward_api_key and not api_keys:
        raise table.error("forward_api_key", "is set but the route has no api_keys(_env)")
    return Access(
        api_keys=api_keys,
        api_key_header=header,
        signing_secret=_read_signing_secret(table),
        forward_api_key=forward_api_key,
    )


def _read_signing_secret(table: Table) -> bytes | None:
    """``signing_secret``, or the variable ``signing_secret_env`` names; while that variable is
    unset, ``signing_secret_env_default`` if given (a demo's: anyone who reads the file can
    sign URLs, so the default config's comment says to set the variable)."""
    default_key = "signing_secret_env_default"
    if table.has(default_key) and not table.has("signing_secret_env"):
        raise table.error(default_key, "goes only with signing_secret_env")
    default = (
        _check_secret(table, default_key, table.string(default_key))
        if table.has(default_key)
        else None
    )
    if table.has("signing_secret"):
        return _check_secret(table, "signing_secret", table.string("signing_secret"))
    if not table.has("signing_secret_env"):
        return None
    if default is not None and not os.environ.get(table.string("signing_secret_env"), "").strip():
        return default
    return _check_secret(table, "signing_secret_env", from_environment(table, "signing_secret_env"))


def _check_secret(table: Table, key: str, text: str) -> bytes:
    secret = text.encode("utf-8")
    if len(secret) < MIN_SIGNING_SECRET_BYTES:
        raise table.error(
            key, f"must be at least {MIN_SIGNING_SECRET_BYTES} bytes, got {len(secret)}"
        )
    return secret


def _read_route(table: Table, index: int, base_limits: Limits) -> Route:
    raw_prefix = table.string("prefix")
    if not _is_plain_prefix(raw_prefix):
        raise table.error(
            "prefix",
            f"must be a plain path starting with '/' (ASCII letters, "
            f"digits and -._~!$&'()*+,=:@; no '.' or '..' segments), "
            f"got {raw_prefix!r}",
        )
    prefix = normalize_prefix(raw_prefix)
    if prefix in RESERVED_PREFIXES:
        raise table.error("prefix", f"{prefix} is reserved for the gateway itself")
    integration = table.choice("integration", tuple(KINDS))
    kind = KINDS[integration]
    settings = kind.read_settings(table)
    limits = _read_limits(table, base_limits)
    compress = table.boolean("compress", kind.compress)
    compress_min_bytes = table.integer("compress_min_bytes", COMPRESS_MIN_BYTES)
    access = _read_access(table)
    raw_path = table.boolean("raw_path", False)
    if raw_path and not kind.raw_path:
        passing = [name for name, other in KINDS.items() if other.raw_path]
        raise table.error(
            "raw_path",
            f"only {' and '.join(passing)} routes pass "
            f"paths on; a {integration} route reads them itself",
        )
    table.finish()
    return Route(
        prefix=prefix,
        integration=integration,
        limits=limits,
        settings=settings,
        index=index,
        compress=compress,
        compress_min_bytes=compress_min_bytes,
        access=access,
        raw_path=raw_path,
    )


def _read_shared_state(table: Table) -> SharedState:
    redis_url = table.raw("redis_url")
    if redis_url is not None:
        if not isinstance(redis_url, str) or not redis_url.startswith(REDIS_SCHEMES):
            raise table.error("redis_url", "must be a redis://, rediss:// or unix:// URL")
    shared = SharedState(
        redis_url=redis_url,
        on_shared_state_error=table.choice(
            "on_shared_state_error", SHARED_STATE_POLICIES, SharedState.on_shared_state_error
        ),
        timeout_s=table.seconds("timeout", SharedState.timeout_s),
        lease_s=table.seconds("lease", SharedState.lease_s),
        quota_step_bytes=table.integer(
            "quota_step_bytes", SharedState.quota_step_bytes, minimum=4096
        ),
        key_prefix=table.string("key_prefix", SharedState.key_prefix),
    )
    table.finish()
    return shared


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _read_plan(table: Table) -> Plan:
    name = table.string("name")
    if not name.strip():
        raise table.error("name", "must not be empty")
    keys = _read_api_keys(table, "keys")
    if not keys:
        raise table.error("keys", "a plan needs keys or keys_env")
    rate = table.raw("requests_per_second")
    if rate is not None and (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not (math.isfinite(rate) and rate > 0)
    ):
        raise table.error("requests_per_second", f"must be a positive number, got {rate!r}")
    burst = table.integer("burst", 0, minimum=1) if table.has("burst") else 0
    if burst and rate is None:
        raise table.error("burst", "needs requests_per_second (the rate after the burst)")
    if rate is not None and not burst:
        burst = max(1, math.ceil(rate))  # a second's worth, as API Gateway's console suggests
    plan = Plan(
        name=name,
        keys=keys,
        requests_per_second=float(rate or 0),
        burst=burst,
        bytes_per_day=table.integer("bytes_per_day", 0),
        bytes_per_month=table.integer("bytes_per_month", 0),
        max_concurrent_streams=table.integer("max_concurrent_streams", 0),
    )
    table.finish()
    return plan


def _read_plans(top: Table, path: Path) -> tuple[Plan, ...]:
    raw_plans = top.raw("plans") or []
    if not isinstance(raw_plans, list) or not all(isinstance(p, dict) for p in raw_plans):
        raise ConfigError(path, "plans", "must be an array of tables ([[plans]])")
    plans: list[Plan] = []
    names: dict[str, int] = {}
    key_owners: dict[str, int] = {}
    for index, raw in enumerate(raw_plans):
        plan = _read_plan(Table(raw, path, f"plans[{index}]"))
        if plan.name in names:
            raise ConfigError(
                path,
                f"plans[{index}].name",
                f"{plan.name!r} is already the name of plans[{names[plan.name]}]",
            )
        names[plan.name] = index
        for key in plan.keys:
            if key in key_owners:
                # Never echo the key: config errors are printed and logged.
                raise ConfigError(
                    path,
                    f"plans[{index}].keys",
                    f"a key is already on plans[{key_owners[key]}] (a key has one plan)",
                )
            key_owners[key] = index
        plans.append(plan)
    return tuple(plans)


def parse(data: Mapping[str, Any], path: Path) -> Config:
    """Validate an already-decoded TOML document."""
    top = Table(data, path, "")
    server = _read_server(top.table("server"))
    limits_table = top.table("limits")
    limits = _read_limits(limits_table, Limits())
    limits_table.finish()
    raw_routes = top.raw("routes") or []
    if not isinstance(raw_routes, list) or not all(isinstance(r, dict) for r in raw_routes):
        raise ConfigError(path, "routes", "must be an array of tables ([[routes]])")
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_routes):
        route = _read_route(Table(raw, path, f"routes[{index}]"), index, limits)
        if route.prefix in seen:
            raise ConfigError(
                path,
                f"routes[{index}].prefix",
                f"{route.prefix} is already the prefix of routes[{seen[route.prefix]}]",
            )
        seen[route.prefix] = index
        routes.append(route)
    shared_state = _read_shared_state(top.table("shared_state"))
    plans = _read_plans(top, path)
    top.finish()
    return Config(
        path=path,
        server=server,
        limits=limits,
        routes=tuple(routes),
        shared_state=shared_state,
        plans=plans,
    )


def load(path: Path | str) -> Config:
    """Read and validate a config file; any problem is a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except OSError as error:
        raise ConfigError(path, "", f"cannot read: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "", f"not valid TOML: {error}") from error
    return parse(data, path.resolve())
