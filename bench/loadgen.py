"""The load generators: curl for one transfer, wrk for many, with their output parsed.

Both are external C programs on purpose: a Python client would spend more CPU
than the servers it measures, on the same two cores.
"""

import ipaddress
import re
import resource
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit


class LoadFailed(Exception):
    """A transfer did not complete as a successful, complete response."""


@dataclass(frozen=True)
class Download:
    bytes_per_s: float
    size_bytes: int
    # curl's own CPU: near one core's worth, the client and not the server sets the pace.
    client_cpu_s: float


@dataclass(frozen=True)
class WrkRun:
    requests: int
    requests_per_s: float
    bytes_per_s: float
    bytes_read: float
    p99_s: float
    # Socket errors and non-2xx/3xx responses, as wrk words them; empty when clean.
    errors: list[str]


def curl_download(url: str, expected_size_bytes: int, timeout_s: float) -> Download:
    """GET `url` once into /dev/null; fail unless a 200 with every byte arrived."""
    _require_loopback(url)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            str(timeout_s),
            "-w",
            "%{http_code} %{size_download} %{speed_download}",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    status, size, speed = completed.stdout.split()
    if completed.returncode != 0 or status != "200" or int(size) != expected_size_bytes:
        raise LoadFailed(
            f"curl exit {completed.returncode}, status {status}, "
            f"{size} of {expected_size_bytes} bytes"
        )
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu_s = (
        children_after.ru_utime
        + children_after.ru_stime
        - children_before.ru_utime
        - children_before.ru_stime
    )
    return Download(bytes_per_s=float(speed), size_bytes=int(size), client_cpu_s=client_cpu_s)


def run_wrk(url: str, threads: int, connections: int, duration_s: int) -> WrkRun:
    """Run wrk with its latency distribution and return its figures."""
    _require_loopback(url)
    completed = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", url],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise LoadFailed(f"wrk exit {completed.returncode}: {completed.stderr.strip()}")
    return parse_wrk(completed.stdout)


def parse_wrk(output: str) -> WrkRun:
    """Read wrk 4's report.

    Bytes come from the "N requests in T, B read" line rather than
    Transfer/sec, which wrk rounds to three digits. wrk's size units are
    binary (KB = 1024 bytes).
    """
    totals = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGT]?B) read", output)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    requests_per_s = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not (totals and p99 and requests_per_s):
        raise LoadFailed(f"unexpected wrk output:\n{output}")
    elapsed_s = _seconds(float(totals[2]), totals[3])
    bytes_read = float(totals[4]) * _BINARY_UNITS[totals[5]]
    errors = re.findall(
        r"^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$", output, re.MULTILINE
    )
    return WrkRun(
        requests=int(totals[1]),
        requests_per_s=float(requests_per_s[1]),
        bytes_per_s=bytes_read / elapsed_s,
        bytes_read=bytes_read,
        p99_s=_seconds(float(p99[1]), p99[2]),
        errors=[error.strip() for error in errors],
    )


_BINARY_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SECONDS_PER_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(value: float, unit: str) -> float:
    return value * _SECONDS_PER_UNIT[unit]


def _require_loopback(url: str) -> None:
    """The benchmark only ever loads this machine: refuse any other address."""
    host = urlsplit(url).hostname or ""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing a non-loopback target: {url}")
