"""Which asyncio event loop runs the gateway: uvloop where it is installed, else asyncio's own.

uvloop (the optional ``uvloop`` extra) is a drop-in loop written in C; Tornado runs on it
unchanged. Per request it saves the Python-level selector and handle bookkeeping that Tornado
goes through for every read, write and timeout (bench/RESULTS.md has the figures). ``auto``
takes it when it can be imported, so installing the extra is all it takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from mediaproxy import config

T = TypeVar("T")


def chosen(event_loop: str) -> str:
    """The loop ``event_loop`` ("auto", "asyncio" or "uvloop") means on this installation."""
    if event_loop == "auto":
        return "uvloop" if config.uvloop_installed() else "asyncio"
    return event_loop


def _factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if chosen(event_loop) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None  # asyncio's default


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=_factory(event_loop)) as runner:
        return runner.run(main)
