"""The folder where the worker processes of one server keep their metrics.

prometheus_client's multiprocess mode: each process writes its values to memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR``, and prometheus_client picks that storage when it is first
imported. So this module imports nothing of prometheus_client: the supervisor
(``mediaproxy.server.workers``) prepares the folder before ``mediaproxy.ops.metrics`` is loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it


def multiprocess_dir() -> str | None:
    """The shared folder when running as one of several processes, else None."""
    return os.environ.get(MULTIPROCESS_DIR_ENV)


def prepare_metrics_dir() -> Callable[[], None]:
    """Set up the shared metrics folder; returns what undoes it."""
    given = os.environ.get(MULTIPROCESS_DIR_ENV)
    if given:
        # Files of a previous run would be summed into this one's counters.
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return lambda: None
    created = tempfile.mkdtemp(prefix="mediaproxy-metrics-")
    os.environ[MULTIPROCESS_DIR_ENV] = created
    return lambda: shutil.rmtree(created, ignore_errors=True)
