"""Collecting samples and turning them into the table and bench/RESULTS.md.

Every figure is reported as median, min and max over the repetitions, with
its ratio to nginx's median in the same scenario: a figure alone says little
on a shared, noisy machine, a ratio to a peer measured in the same run, in
interleaved repetitions, says much more.
"""

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tornado
from workspace import REPO

REFERENCE_SERVER = "nginx"


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    @property
    def label(self) -> str:
        return f"{self.name} {'↑' if self.higher_is_better else '↓'}"


@dataclass(frozen=True)
class Row:
    scenario: str
    server: str
    metric: str
    samples: list[float]
    ratio_to_reference: float | None


class Results:
    """Samples by scenario, metric and server, kept in the order they first appear."""

    def __init__(self) -> None:
        self._samples: dict[tuple[str, str], dict[str, list[float]]] = {}
        self.notes: list[tuple[str, str]] = []

    def add(self, scenario: str, server: str, metric: Metric, value: float) -> None:
        by_server = self._samples.setdefault((scenario, metric.label), {})
        by_server.setdefault(server, []).append(value)

    def note(self, scenario: str, text: str) -> None:
        self.notes.append((scenario, text))
        print(f"  note [{scenario}] {text}", flush=True)

    def medians(self, scenario: str, metric: Metric) -> dict[str, float]:
        """Each server's median for one scenario and metric."""
        by_server = self._samples.get((scenario, metric.label), {})
        return {server: statistics.median(samples) for server, samples in by_server.items()}

    def rows(self) -> list[Row]:
        rows = []
        for (scenario, metric), by_server in self._samples.items():
            reference = by_server.get(REFERENCE_SERVER)
            reference_median = statistics.median(reference) if reference else None
            for server, samples in by_server.items():
                ratio = statistics.median(samples) / reference_median if reference_median else None
                rows.append(Row(scenario, server, metric, samples, ratio))
        return rows


_HEADER = ("scenario", "server", "metric", "median", "min", "max", f"x {REFERENCE_SERVER}", "n")


def text_table(rows: list[Row]) -> str:
    """The table as aligned plain text, for the terminal."""
    table = [_HEADER] + [_cells(row) for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(_HEADER))]
    numeric_from = 3
    lines = []
    for line in table:
        cells = [
            cell.ljust(width) if column < numeric_from else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * 3 + "---:|" * (len(_HEADER) - 3)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def _cells(row: Row) -> tuple[str, ...]:
    ratio = "—" if row.ratio_to_reference is None else f"{row.ratio_to_reference:.2f}"
    return (
        row.scenario,
        row.server,
        row.metric,
        format_number(statistics.median(row.samples)),
        format_number(min(row.samples)),
        format_number(max(row.samples)),
        ratio,
        str(len(row.samples)),
    )


def format_number(value: float) -> str:
    """Three significant figures or so, without scientific notation."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def describe_machine() -> dict[str, str]:
    """What a reader needs to judge the figures: hardware, kernel and every program's version."""
    return {
        "cpus": f"{os.cpu_count()} ({_cpu_model()})",
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "nginx": _first_line(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": " ".join(_first_line(["wrk", "-v"]).split()[:2]),
        "curl": " ".join(_first_line(["curl", "--version"]).split()[:2]),
        "mediaproxy": _mediaproxy_revision(),
    }


def load_average() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def write_markdown(
    path: Path,
    *,
    date: str,
    machine: dict[str, str],
    command: str,
    settings: str,
    load_before: str,
    load_after: str,
    rows: list[Row],
    notes: list[tuple[str, str]],
) -> None:
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    note_lines = "\n".join(f"- **{scenario}**: {text}" for scenario, text in notes) or "- none"
    targets = TARGETS_FILE.read_text().strip() if TARGETS_FILE.exists() else "Not assessed."
    path.write_text(f"""\
# mediaproxy benchmark results

Date: {date}

## Machine

{machine_lines}
- load average (1, 5, 15 min): {load_before} before the run, {load_after} after

## Command

```sh
{command}
```

Settings: {settings}

## Results

{markdown_table(rows)}

## Notes

{note_lines}

## Targets, and what stands in the way

{targets}

## How to read this

{HOW_TO_READ}
""")


# Written by hand from a run and its profile; every report carries it (issue 6 asks RESULTS.md
# to say, for a target out of reach, what the profile shows is in the way).
TARGETS_FILE = Path(__file__).with_name("TARGETS.md")

HOW_TO_READ = """\
Each row is one server in one scenario; median, min and max are over the `n`
repetitions, which ran interleaved (nginx, tornado, mediaproxy, nginx, ...) so
that a burst of noise on this shared machine hits every server alike. `x nginx`
is the row's median over nginx's median for the same scenario and metric: the
peer measured in the same run. ↑ marks a metric where higher is better, ↓ one
where lower is better: for ↑ a ratio under 1 is worse than nginx, for ↓ a
ratio over 1 is. Trust ratios more than absolute figures, and no difference
smaller than the spread between min and max.

"CPU s/GiB" is the server's own user+system CPU (all its processes and
threads) per GiB sent; the load generator shares the two cores but is not
counted in it. In `disk` and `relay` the client is a single curl, shown as
"curl CPU s/GiB": when that times the GiB/s it moved comes near 1, curl keeps
a whole core busy and sets the pace, and MB/s stops telling the servers
apart. On loopback the kernel's TCP receive work (about 0.3 s/GiB here) is
charged to whichever side happens to run it, so from one repetition to the
next a server's CPU s/GiB and curl's move in opposite directions while their
sum stays steady: read the medians, and the sum when two servers are close.

"nginx" is one worker process, like-for-like with one Python process;
"nginx-auto" has one per core. In `relay`, "nginx" is nginx's proxy_pass and
the origin, another nginx, is not counted. Logging differs: nginx runs with
access_log off and Tornado with no logging configured, while mediaproxy
writes its default access line per request (to bench/work/logs/), a cost
its users pay too. Before its timed repetitions each server answers one
untimed HEAD for the scenario's file (Tornado hashes a file for its ETag on
first use)."""


def _mediaproxy_revision() -> str:
    """The commit measured, flagged when the package's files differ from it."""
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    changed = _first_line(["git", "-C", str(REPO), "status", "--porcelain", "--", "mediaproxy"])
    return f"{commit} plus uncommitted changes" if changed != "unknown" else commit


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown model"


def _first_line(argv: list[str]) -> str:
    """The first line a program prints (some print their version on stderr)."""
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else "unknown"
