"""Headless Chromium (Debian's package) driven over the Chrome DevTools Protocol.

Lighter than Selenium + chromedriver: the protocol is JSON over one WebSocket, and tornado,
which we have anyway, is a WebSocket client. Enough for the status page tests: open a page,
evaluate JavaScript (awaiting promises), poll for a condition, take a screenshot, and collect
uncaught JavaScript exceptions so a broken page fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1200,1300",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
]
START_TIMEOUT_S = 30


class BrowserError(Exception):
    pass


class Browser:
    """One Chromium process with one page attached."""

    def __init__(
        self, process: subprocess.Popen[bytes], connection: WebSocketClientConnection
    ) -> None:
        self._process = process
        self._connection = connection
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._session: str | None = None
        self.exceptions: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def launch(cls, user_data_dir: Path) -> Browser:
        assert CHROMIUM is not None
        process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = user_data_dir / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not (port_file.exists() and len(port_file.read_text().split("\n")) >= 2):
            if process.poll() is not None or loop.time() > deadline:
                process.kill()
                raise BrowserError(f"chromium did not start (exit code {process.poll()})")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().split("\n")[:2]
        connection = await websocket_connect(
            f"ws://127.0.0.1:{port}{path}", max_message_size=64 * 1024 * 1024
        )
        browser = cls(process, connection)
        target = await browser.send("Target.createTarget", {"url": "about:blank"})
        attached = await browser.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        browser._session = attached["sessionId"]
        await browser.send("Runtime.enable")
        await browser.send("Page.enable")
        return browser

    async def _read(self) -> None:
        while (message := await self._connection.read_message()) is not None:
            data = json.loads(message)
            future = self._pending.pop(data.get("id", 0), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.exceptions.append(
                    details.get("exception", {}).get("description")
                    or details.get("text", "exception")
                )
        for future in self._pending.values():
            future.set_exception(BrowserError("chromium closed the connection"))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One protocol command; its result, or BrowserError."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if self._session is not None:
            message["sessionId"] = self._session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._connection.write_message(json.dumps(message))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15) -> Any:
        """Poll until the expression is truthy; its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (value := await self.evaluate(expression)):
            if loop.time() > deadline:
                raise BrowserError(f"still false after {timeout_s} s: {expression}")
            await asyncio.sleep(0.1)
        return value

    async def set_viewport(self, width: int, height: int) -> None:
        """Lay the page out as a screen this size would (a phone's, say), touch and all."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self._connection.close()
        self._process.terminate()
        try:
            await asyncio.to_thread(self._process.wait, 10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.cancel()
