"""A mediaproxy server on an ephemeral loopback port, run by its own event loop in a thread:
what the integration tests and the benchmarks drive with real clients. A thread per server
keeps the client code plainly synchronous, the way a real client is (and pytest-tornado 0.8
fails to load under ``-W error``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from mediaproxy import config as config_module
from mediaproxy.server.app import RunningServer, start


class GatewayThread:
    """A mediaproxy server on an ephemeral loopback port, run by its own loop in a thread."""

    def __init__(self, config: config_module.Config) -> None:
        self.config = config
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.running: RunningServer | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.running = start(self.config)
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.running.shutdown()

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, function: Callable[[], object]) -> object:
        """Run ``function`` on the server's loop and return its result (for inspection)."""
        result: list[object] = []
        done = threading.Event()

        def run() -> None:
            result.append(function())
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)
        return result[0]

    def active_streams(self) -> int:
        assert self.running is not None
        gateway = self.running.gateway
        return int(self.call(lambda: len(gateway.active)))  # type: ignore[arg-type]

    def stop(self) -> None:
        """Shut the gateway down (as SIGTERM does) and wait for it; again: nothing."""
        if self._stop is not None and self.running is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
