"""Blocking work off the event loop: one owner's steps run in order on a bounded pool.

SQL exports and synchronous function handlers call code that blocks (a SQLite step, a read
inside psycopg, a user's generator). Each kind of work gets its own bounded thread pool, never
the default one (Tornado's DNS resolver uses that). ``SerialSteps`` keeps one owner's steps
strictly sequential, so its objects (a connection, a generator) are used by one thread at a
time, and the caller submits the next step only after it has sent the last one's output: the
client's pace is the flow control, nothing runs ahead of it.

A cancelled owner cannot stop a thread mid-step. ``close`` therefore interrupts the running
step where the library allows it (``sqlite3.Connection.interrupt``, a PostgreSQL cancel
request) and runs the clean-up right after it, on the pool, whatever happens to the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("mediaproxy")


class LazyPool:
    """A named, bounded thread pool that starts its threads only when first used."""

    def __init__(self, threads: int, name: str) -> None:
        self._threads, self._name = threads, name
        self._pool: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix=self._name)
        return self._pool


class SerialSteps:
    """Blocking calls for one owner, never two at once, each awaited on the event loop."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._pending: Future[Any] | None = None

    async def run(self, step: Callable[..., T], *args: Any) -> T:
        pending = self._pool.submit(step, *args)
        self._pending = pending
        return await asyncio.wrap_future(pending)

    def close(
        self, cleanup: Callable[[], object], interrupt: Callable[[], object] | None = None
    ) -> asyncio.Future[None]:
        """Run ``cleanup`` on the pool once no step is running; a future for when it has run.

        A step still queued is dropped; a running one is first ``interrupt``-ed. The clean-up
        runs whether or not anybody awaits the future; its failure is logged, never raised.
        """
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not finished.done():
                finished.set_result(None)

        def run_cleanup() -> None:
            try:
                cleanup()
            except Exception:
                log.exception("clean-up after a blocking step failed")
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the loop has closed meanwhile: nobody is waiting
                pass

        def submit(_: object = None) -> None:
            self._pool.submit(run_cleanup)

        pending = self._pending
        if pending is None or pending.cancel() or pending.done():
            submit()
        else:
            if interrupt is not None:
                interrupt()
            pending.add_done_callback(submit)  # runs now if the step has just ended
        return finished
