"""The command line: ``mediaproxy --config FILE [--address A] [--port P] [--check-config]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

from mediaproxy import __version__, config as config_module
from mediaproxy.app import serve

EXIT_CONFIG_ERROR = 2  # the same code argparse uses for a bad command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediaproxy", description="Stream media, files and exports over HTTP.")
    parser.add_argument("--config", type=Path, default=Path("conf/mediaproxy.toml"),
                        help="TOML config file (default: %(default)s)")
    parser.add_argument("--address", help="listen address; overrides [server] address")
    parser.add_argument("--port", type=int, help="listen port (0: any free one); overrides "
                                                 "[server] port")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and exit (0 valid, 2 invalid)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
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
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args)
    except config_module.ConfigError as error:
        print(f"mediaproxy: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.check_config:
        print(f"{config.path}: ok ({len(config.routes)} routes)")
        return 0
    asyncio.run(serve(config))
    return 0
