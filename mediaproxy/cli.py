"""The command line.

mediaproxy --config FILE [--address A] [--port P] [--check-config]   serve
mediaproxy sign --config FILE --path /media/x.mp4 [--expires-in S]    mint a signed URL
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

# Not mediaproxy.server.app: the workers module imports it once the metrics storage is chosen.
from mediaproxy import __version__
from mediaproxy import config as config_module
from mediaproxy.errors import ListenError, RequestError
from mediaproxy.http import paths
from mediaproxy.http.signing import sign_query
from mediaproxy.server import workers

EXIT_CONFIG_ERROR = 2  # the same code argparse uses for a bad command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediaproxy",
        description="Stream media, files and exports over HTTP.",
        epilog="mediaproxy sign --help: mint an expiring signed URL for a private route.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("conf/mediaproxy.toml"),
        help="TOML config file (default: %(default)s)",
    )
    parser.add_argument("--address", help="listen address; overrides [server] address")
    parser.add_argument(
        "--port", type=int, help="listen port (0: any free one); overrides [server] port"
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config and exit (0 valid, 2 invalid)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    parser.add_argument("--version", action="version", version=f"mediaproxy {__version__}")
    return parser


def load_config(args: argparse.Namespace) -> config_module.Config:
    loaded = config_module.load(args.config)
    server = loaded.server
    if args.address is not None:
        server = replace(server, address=args.address)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise config_module.ConfigError("--port", "", f"must be 0..65535, got {args.port}")
        server = replace(server, port=args.port)
    return replace(loaded, server=server)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sign"]:
        return sign(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args)
    except config_module.ConfigError as error:
        print(f"mediaproxy: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.check_config:
        print(f"{config.path}: ok ({len(config.routes)} routes)")
        return 0
    try:
        return workers.run(config, lambda: load_config(args))
    except ListenError as error:
        print(f"mediaproxy: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def _sign_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediaproxy sign",
        description="Print a URL that admits one method on one path until it expires; the "
        "route serving the path must have a signing_secret(_env).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("conf/mediaproxy.toml"),
        help="TOML config file (default: %(default)s)",
    )
    parser.add_argument(
        "--path",
        required=True,
        help="full path, route prefix included, optionally with a ?query (it "
        "is signed too); characters not allowed in a URL are "
        "percent-encoded, existing %%XX kept",
    )
    parser.add_argument(
        "--expires-in",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="valid for this long from now (default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        default="GET",
        type=str.upper,
        help="method the URL admits (default: %(default)s; GET admits HEAD)",
    )
    parser.add_argument(
        "--base-url",
        help="scheme://host[:port] clients reach the gateway "
        "at (default: [server] public_url, else its "
        "address and port)",
    )
    return parser


def _gateway_url(server: config_module.ServerConfig) -> str:
    """Where clients reach the gateway: public_url when set, else the listening address."""
    if server.public_url is not None:
        public = server.public_url
        return f"{public.scheme}://{public.authority}{public.mount}"
    host = f"[{server.address}]" if ":" in server.address else server.address
    scheme = "https" if server.tls is not None else "http"
    return f"{scheme}://{host}:{server.port}"


def sign(argv: list[str]) -> int:
    """``mediaproxy sign``: print a signed URL, or say on stderr why none can be made."""
    parser = _sign_parser()
    args = parser.parse_args(argv)
    if args.expires_in <= 0:
        parser.error(f"--expires-in must be a positive number of seconds, got {args.expires_in}")
    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as error:
        print(f"mediaproxy: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    raw_path, _, query = args.path.partition("?")
    try:
        # Signed as the gateway will read it: the one normalised path it routes by.
        request_path = paths.normalise_path(quote(raw_path, safe="/%!$&'()*+,;=:@~"))
    except RequestError as error:
        parser.error(f"--path: {error}")
    path = request_path.text
    routes = {route.prefix: route for route in config.routes}
    prefix = paths.match_prefix(request_path, list(routes))
    if prefix is None:
        parser.error(f"no route in {config.path} serves {path}")
    route = routes[prefix]
    try:
        paths.below_prefix(request_path, prefix, raw=route.raw_path)
    except RequestError as error:
        parser.error(f"--path: route {prefix} would refuse it: {error}")
    if route.access.signing_secret is None:
        parser.error(f"route {route.prefix} in {config.path} has no signing_secret(_env)")
    expires_s = int(time.time()) + args.expires_in
    signed = sign_query(route.access.signing_secret, args.method, path, expires_s, query)
    base_url = (args.base_url or _gateway_url(config.server)).rstrip("/")
    print(f"{base_url}{path}?{signed}")
    return 0
