"""The servers under test: how each is configured, started, checked and stopped.

Every server runs as its own process group (`start_new_session=True`), for two
reasons: procstat.py measures CPU and memory per group, and stopping a server
means signalling its group, so that nginx workers or forked mediaproxy
children never outlive a run, whether it ends normally, fails or is
interrupted with Ctrl-C.

A server that cannot take part (mediaproxy not installed yet, or a
configuration it rejects at start-up, such as an integration it does not have)
raises ServerUnavailable; the scenario records the reason and goes on with
the other servers.
"""

import contextlib
import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import procstat
from workspace import REPO, MiB, Workspace

MEDIAPROXY_BIN = REPO / ".venv" / "bin" / "mediaproxy"
TORNADO_STATIC = REPO / "bench" / "tornado_static.py"
TTFB = REPO / "bench" / "ttfb.py"
AIOHTTP_PROXY = REPO / "bench" / "aiohttp_proxy.py"
TORNADO_PROXY = REPO / "bench" / "tornado_proxy.py"

# Long enough for a cold Python start on a loaded machine; short enough that a
# server that hangs at start-up does not stall the run.
_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 5.0


class ServerUnavailable(Exception):
    """The server cannot take part in this scenario; the message says why."""


@dataclass(frozen=True)
class ServerRecipe:
    """How to run one server.

    `configure(workspace, config_dir, port)` writes the server's configuration
    into its own directory and returns the command that runs it.

    `name` labels the results; `instance` names its log and configuration
    directory, distinct even where two scenarios label different setups alike
    ("nginx" is a file server in one and a proxy in another).
    """

    name: str
    instance: str
    configure: Callable[[Workspace, Path, int], list[str]]
    # A server configured for several processes must really have them; a
    # configuration key that is silently ignored would otherwise measure the
    # single-process server under a misleading name.
    min_processes: int = 1


@dataclass(frozen=True)
class RunningServer:
    name: str
    port: int
    pgid: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def running(recipe: ServerRecipe, workspace: Workspace) -> Iterator[RunningServer]:
    """Start the server, wait until it serves a small file, and always stop it on exit."""
    port = _free_loopback_port()
    argv = recipe.configure(workspace, workspace.server_dir(recipe.instance), port)
    log_path = workspace.logs_dir / f"{recipe.instance}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = RunningServer(recipe.name, port, pgid=process.pid)
        _wait_until_serving(process, server, workspace, log_path)
        _check_process_count(recipe, server)
        yield server
    finally:
        _stop(process)


@contextlib.contextmanager
def running_all(
    recipes: list[ServerRecipe], workspace: Workspace, on_unavailable: Callable[[str], None]
) -> Iterator[list[RunningServer]]:
    """Start every recipe that can run; report the others through `on_unavailable`."""
    with contextlib.ExitStack() as stack:
        servers = []
        for recipe in recipes:
            try:
                servers.append(stack.enter_context(running(recipe, workspace)))
            except ServerUnavailable as reason:
                on_unavailable(f"{recipe.name} skipped: {reason}")
        yield servers


# -- recipes ------------------------------------------------------------------


def nginx_static(name: str = "nginx", worker_processes: str = "1") -> ServerRecipe:
    """nginx serving the data directory with sendfile, as most deployments would.

    One worker by default: the Python servers run as one process, so one nginx
    worker is the like-for-like peer; "auto" shows what nginx does with every core.
    """

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        locations = f"location /files/ {{ alias {workspace.data_dir}/; }}"
        return _nginx_argv(config_dir, port, worker_processes, locations)

    return ServerRecipe(name, name, configure)


def nginx_origin() -> ServerRecipe:
    """nginx as the upstream of the relay scenario.

    It serves the data both under /files/ and at the root, so a proxy works
    whether or not it strips its route prefix before forwarding.
    """

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        locations = (
            f"location /files/ {{ alias {workspace.data_dir}/; }}\n"
            f"        location / {{ root {workspace.data_dir}; }}"
        )
        return _nginx_argv(config_dir, port, "1", locations)

    return ServerRecipe("origin", "origin", configure)


def nginx_proxy(origin_port: int) -> ServerRecipe:
    """nginx relaying the origin unbuffered, with the buffer sizes a media proxy would set."""

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        locations = (
            "location /files/ {\n"
            f"            proxy_pass http://127.0.0.1:{origin_port};\n"
            "            proxy_buffering off;\n"
            "            proxy_buffer_size 256k;\n"
            "            proxy_buffers 8 256k;\n"
            "        }"
        )
        return _nginx_argv(config_dir, port, "1", locations)

    return ServerRecipe("nginx", "nginx-proxy", configure)


def tornado_static() -> ServerRecipe:
    """Tornado's StaticFileHandler in one process (bench/tornado_static.py)."""

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        return [
            sys.executable,
            str(TORNADO_STATIC),
            "--port",
            str(port),
            "--root",
            str(workspace.data_dir),
        ]

    return ServerRecipe("tornado", "tornado", configure)


def aiohttp_proxy(origin_port: int) -> ServerRecipe:
    """The aiohttp peer (bench/aiohttp_proxy.py): a plain streaming aiohttp proxy script."""

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        if importlib.util.find_spec("aiohttp") is None:
            raise ServerUnavailable(
                "aiohttp not installed (bench/setup.sh installs the bench extra)"
            )
        return [
            sys.executable,
            str(AIOHTTP_PROXY),
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{origin_port}",
        ]

    return ServerRecipe("aiohttp", "aiohttp-proxy", configure)


def tornado_proxy(origin_port: int) -> ServerRecipe:
    """The naive Tornado proxy (bench/tornado_proxy.py): AsyncHTTPClient with a stream callback."""

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        return [
            sys.executable,
            str(TORNADO_PROXY),
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{origin_port}",
        ]

    return ServerRecipe("tornado", "tornado-proxy", configure)


def mediaproxy_files(
    name: str = "mediaproxy", processes: int = 1, event_loop: str = "auto"
) -> ServerRecipe:
    """mediaproxy's file integration; `processes` > 1 adds `processes = N` to [server].

    `event_loop` "auto" is mediaproxy's default (uvloop where installed, as it is in the
    project's venv); "asyncio" measures the other way.
    """

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        route = f'integration = "file"\nroot = "{workspace.data_dir}"\n'
        return _mediaproxy_argv(config_dir, port, route, processes, event_loop)

    return ServerRecipe(name, name, configure, min_processes=processes)


def mediaproxy_relay(
    origin_port: int, name: str = "mediaproxy", event_loop: str = "auto"
) -> ServerRecipe:
    """mediaproxy's http_proxy integration in front of the origin."""

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        route = f'integration = "http_proxy"\nupstream = "http://127.0.0.1:{origin_port}/"\n'
        return _mediaproxy_argv(config_dir, port, route, 1, event_loop)

    return ServerRecipe(name, f"{name}-relay", configure)


def mediaproxy_cached(
    origin_port: int, name: str = "mediaproxy-cache", origin_path: str = "/"
) -> ServerRecipe:
    """mediaproxy's http_proxy integration with its disk cache (emptied at every start), in
    front of the origin's ``origin_path``."""

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        cache_dir = config_dir / "cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        route = (
            f'integration = "http_proxy"\n'
            f'upstream = "http://127.0.0.1:{origin_port}{origin_path}"\n'
            f'cache_dir = "{cache_dir}"\ncache_max_bytes = {4 * 1024 * MiB}\n'
            "idle_timeout = 120\n"
        )
        return _mediaproxy_argv(config_dir, port, route, 1, "auto")

    return ServerRecipe(name, name, configure)


def ttfb_origin() -> ServerRecipe:
    """The streaming origin of the ttfb scenario (bench/ttfb.py): a first chunk at once."""

    def configure(workspace: Workspace, config_dir: Path, port: int) -> list[str]:
        return [sys.executable, str(TTFB), "origin", "--port", str(port)]

    return ServerRecipe("origin", "ttfb-origin", configure)


def _nginx_argv(prefix: Path, port: int, worker_processes: str, locations: str) -> list[str]:
    """Write a minimal nginx.conf into `prefix` and return the command that runs it."""
    # Workers would run as "nobody" under a root master; root keeps file access simple.
    user = "user root;" if os.geteuid() == 0 else ""
    config = f"""\
daemon off;
{user}
worker_processes {worker_processes};
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        {locations}
    }}
}}
"""
    config_path = prefix / "nginx.conf"
    config_path.write_text(config)
    return ["nginx", "-e", "stderr", "-p", str(prefix), "-c", str(config_path)]


def _mediaproxy_argv(
    config_dir: Path, port: int, route_body: str, processes: int, event_loop: str
) -> list[str]:
    """Write a mediaproxy TOML with one /files/ route and return the command that runs it."""
    if not MEDIAPROXY_BIN.exists():
        raise ServerUnavailable(f"not installed ({MEDIAPROXY_BIN.relative_to(REPO)} missing)")
    processes_line = f"processes = {processes}\n" if processes > 1 else ""
    config = (
        "[server]\n"
        'address = "127.0.0.1"\n'
        f"port = {port}\n"
        'access_log = "off"\n'  # like the nginx peer's `access_log off`
        f'event_loop = "{event_loop}"\n'
        f"{processes_line}"
        "\n"
        "[[routes]]\n"
        'prefix = "/files/"\n'
        f"{route_body}"
    )
    config_path = config_dir / "mediaproxy.toml"
    config_path.write_text(config)
    return [str(MEDIAPROXY_BIN), "--config", str(config_path), "--port", str(port)]


# -- lifecycle ----------------------------------------------------------------


def _free_loopback_port() -> int:
    """Ask the kernel for a free port (the tiny race until the server binds is harmless here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_serving(
    process: subprocess.Popen[bytes], server: RunningServer, workspace: Workspace, log_path: Path
) -> None:
    """Return once GET of the small file answers 200; raise ServerUnavailable otherwise."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        exit_code = process.poll()
        if exit_code is not None:
            raise ServerUnavailable(
                f"exited with code {exit_code} at start-up: {_last_line(log_path)}"
            )
        status = _status_of_get(server.port, workspace.small.url_path)
        if status == 200:
            return
        if status is not None:
            raise ServerUnavailable(f"answered {status} to GET {workspace.small.url_path}")
        time.sleep(0.05)
    raise ServerUnavailable(f"not serving after {_START_TIMEOUT_S:.0f} s: {_last_line(log_path)}")


def _status_of_get(port: int, path: str) -> int | None:
    """Return the status of GET `path`, or None while nothing accepts connections."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None  # not listening yet, or not answering yet: try again
    finally:
        connection.close()


def _check_process_count(recipe: ServerRecipe, server: RunningServer) -> None:
    count = len(procstat.group_pids(server.pgid))
    if count < recipe.min_processes:
        raise ServerUnavailable(f"configured for {recipe.min_processes} processes but runs {count}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's group, SIGKILL whatever is left after a grace period."""
    pgid = process.pid
    _signal_group(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _signal_group(pgid, signal.SIGKILL)
        process.wait()
    if procstat.group_pids(pgid):
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _last_line(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"
