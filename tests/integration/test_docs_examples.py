"""Every shell example in the documentation runs as written against `make run`'s gateway.

The examples are the ```sh blocks of README.md, docs/*.md and examples/README.md. The gateway
is the default config (conf/mediaproxy.toml) on a free port; each command runs in bash, in a
folder of its own that looks like the repository's root (conf/, sample_media/, examples/,
.venv/), with 127.0.0.1:8080 read as that port. A command must exit 0, and every exchange it
makes must succeed in the access log, unless its comment names the status it shows (`# 401`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "examples" / "README.md",
]
DEFAULT_ADDRESS = "127.0.0.1:8080"

# Commands this test does not run, by how they start, and why.
NOT_RUN = {
    "make ": "make run is the gateway this test starts (on a free port), make test runs this "
    "test, make bench takes minutes",
    "scripts/make_sample_media.sh": "rewrites sample_media/ with ffmpeg",
    ".venv/bin/python -m pytest": "part of the suite running this",
}
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
    re.MULTILINE | re.DOTALL,
)
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
SHOWN_STATUS = re.compile(r"#.*\b([45]\d\d)\b")
CLIENT = re.compile(r"\b(curl|wget|ffprobe)\b")  # a command that makes requests


@dataclass(frozen=True)
class Example:
    where: str  # file:line, for the failure message
    command: str


def examples(document: Path) -> Iterator[Example]:
    """The commands of the document's ```sh blocks, continuation lines joined, comment-only
    lines left out."""
    text = document.read_text()
    for block in FENCE.finditer(text):
        if block["info"].strip() != "sh":
            continue
        first_line = text.count("\n", 0, block.start("body")) + 1
        indent = len(block["indent"])
        pending, start = "", 0
        for offset, raw in enumerate(block["body"].splitlines()):
            line = raw[indent:] if raw[:indent].strip() == "" else raw
            if not pending:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                start = first_line + offset
            pending += line.lstrip() if pending else line
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip() + " "
                continue
            yield Example(f"{document.relative_to(REPO)}:{start}", pending.strip())
            pending = ""


def reason_not_run(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


class Gateway:
    """`mediaproxy --config conf/mediaproxy.toml` in a folder laid out like the repository."""

    def __init__(self, work: Path) -> None:
        (work / "conf").mkdir()
        for shared in ("sample_media", "examples"):
            (work / shared).symlink_to(REPO / shared)
        (work / ".venv").symlink_to(Path(sys.prefix))  # the environment make installed
        self.config = work / "conf" / "mediaproxy.toml"
        shutil.copy(REPO / "conf" / "mediaproxy.toml", self.config)
        environment = {k: v for k, v in os.environ.items() if k != "MEDIAPROXY_DEMO_SECRET"}
        self.environment = environment  # the demo route's documented default signs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mediaproxy", "--config", str(self.config), "--port", "0"],
            cwd=work,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self.access: list[dict[str, object]] = []
        self.lines: list[str] = []
        listening = threading.Event()
        self.port = 0

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line)
                if line.startswith("{"):
                    self.access.append(json.loads(line))
                elif match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                    self.port = int(match.group(1))
                    listening.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not listening.wait(30):
            self.close()
            raise AssertionError("the gateway did not start:\n" + "".join(self.lines))
        # `mediaproxy sign` builds its URL from the config: the port the gateway has.
        text = self.config.read_text()
        self.config.write_text(
            re.sub(r"^port = 8080$", f"port = {self.port}", text, count=1, flags=re.MULTILINE)
        )

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    running = Gateway(tmp_path)
    yield running
    running.close()


def test_examples_are_found_indented_or_not_and_whole() -> None:
    commands = [example.command for document in DOCUMENTS for example in examples(document)]
    assert any(c.startswith("curl -OJ 'http://127.0.0.1:8080/exports/orders.csv") for c in commands)
    # Inside a list item, and continued over two lines.
    assert (
        ".venv/bin/mediaproxy sign --config conf/mediaproxy.toml --path "
        "/private/testsrc-h264-aac.mp4 --expires-in 3600" in commands
    )
    assert not any(c.startswith("#") or c.endswith("\\") for c in commands)
    skipped = [c for c in commands if reason_not_run(c)]
    assert any(c.startswith("make run ") for c in skipped)  # the gateway this test starts
    assert not any("curl" in c or "mediaproxy sign" in c for c in skipped)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_every_shell_example_runs_as_written(gateway: Gateway, tmp_path: Path) -> None:
    work = tmp_path
    assignments: list[str] = []  # a later command may use a variable an earlier one set
    ran = 0
    for document in DOCUMENTS:
        for example in examples(document):
            if reason_not_run(example.command) is not None:
                continue
            command = example.command.replace(DEFAULT_ADDRESS, f"127.0.0.1:{gateway.port}")
            logged_before = len(gateway.access)
            script = "\n".join(["set -euo pipefail", *assignments, command])
            result = subprocess.run(
                ["bash", "-c", script],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=60,
                env=gateway.environment,
            )
            assert result.returncode == 0, (
                f"{example.where}: `{example.command}` exited {result.returncode}\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
            if ASSIGNMENT.match(command):
                assignments.append(command)
            ran += 1
            if not CLIENT.search(command):
                continue
            deadline = time.monotonic() + 10  # a line is written just after its response
            while len(gateway.access) == logged_before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
            exchanges = gateway.access[logged_before:]
            assert exchanges, f"{example.where}: `{example.command}` reached no route"
            shown = SHOWN_STATUS.search(example.command)
            for exchange in exchanges:
                status = exchange["status"]
                assert isinstance(status, int)
                if shown is not None:
                    assert status == int(shown.group(1)), (example.where, exchange)
                else:
                    assert status < 400, (example.where, exchange)
    assert ran >= 15, ran
    # What the README says the examples leave behind.
    assert {path.name for path in work.iterdir()} >= {
        "head.bin",
        "people.csv",
        "resume - notes.txt",
        "orders-since-2024-06-01.csv",
        "orders-since-2024-06-01-paid.csv",
    }
    assert (work / "head.bin").stat().st_size == 100
