"""A small Chrome DevTools Protocol client on trio-websocket, enough to drive a page in a test.

``launch()`` starts a headless Chromium (the system's, nothing is downloaded) and connects to
its DevTools WebSocket; ``Browser.new_page()`` opens a tab; a ``Page`` navigates, types,
clicks, presses Enter, evaluates JavaScript, waits for the DOM to show something and takes a
screenshot. Waits are promises in the page (a MutationObserver), never sleeps: the caller
bounds them with ``trio.fail_after``.

Protocol reference: https://chromedevtools.github.io/devtools-protocol/
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import trio
import trio_websocket

# Headless, as root, on an offline machine: without the background-networking flags Chromium
# keeps trying to reach Google's services.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-port=0",  # a free port, announced on stderr
]
DEVTOOLS_LINE = "DevTools listening on "


class CDPError(Exception):
    """A DevTools command failed, or the page threw."""


class _Call:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: dict[str, Any] = {}
        self.error: str | None = None


class _Stderr:
    """Chromium's stderr: read until the DevTools URL, then drained so Chromium never blocks."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=50)  # the tail, for error messages
        self._buffer = b""

    async def _line(self) -> str | None:
        while b"\n" not in self._buffer:
            data = await self.stream.receive_some()
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode(errors="replace")
        self.lines.append(text)
        return text

    async def devtools_url(self) -> str:
        while (line := await self._line()) is not None:
            if line.startswith(DEVTOOLS_LINE):
                return line.removeprefix(DEVTOOLS_LINE).strip()
        raise CDPError("Chromium exited before it listened:\n" + self.tail())

    async def drain(self) -> None:
        while await self._line() is not None:
            pass

    def tail(self) -> str:
        return "\n".join(self.lines)


class Browser:
    """One DevTools connection to the browser; pages talk over it in flattened sessions."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._pages: dict[str, Page] = {}
        self._closed: str | None = None

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        """Send a command and wait for its result."""
        if self._closed:
            raise CDPError(f"{method}: {self._closed}")
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        call = self._calls[call_id] = _Call()
        try:
            await self._ws.send_message(json.dumps(message))
            await call.done.wait()
        finally:
            del self._calls[call_id]
        if call.error is not None:
            raise CDPError(f"{method}: {call.error}")
        return call.result

    async def read_messages(self) -> None:
        """Route results to their callers and events to their pages, until the socket closes."""
        try:
            while True:
                message = json.loads(await self._ws.get_message())
                if "id" in message:
                    call = self._calls.get(message["id"])
                    if call is not None:
                        if "error" in message:
                            call.error = message["error"].get("message", str(message["error"]))
                        call.result = message.get("result", {})
                        call.done.set()
                elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                    page._event(message["method"], message.get("params", {}))
        except trio_websocket.ConnectionClosed:
            self._closed = "the DevTools connection closed"
            for call in self._calls.values():
                call.error = self._closed
                call.done.set()

    async def new_page(self, width: int = 800, height: int = 600) -> Page:
        """A new tab, in its own window so that it renders even when another tab is in front."""
        target = await self.send(
            "Target.createTarget",
            {"url": "about:blank", "newWindow": True, "width": width, "height": height},
        )
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        self._pages[page.session_id] = page
        for method in ("Page.enable", "Runtime.enable"):
            await page.send(method)
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        # Each page behaves as the focused one, as a person's tab would.
        await page.send("Emulation.setFocusEmulationEnabled", {"enabled": True})
        return page


class Page:
    """A tab. Every wait is bounded by the caller (``trio.fail_after``)."""

    def __init__(self, browser: Browser, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        #: Uncaught JavaScript exceptions and console.error() calls, as text.
        self.errors: list[str] = []
        self._waiting: dict[str, list[trio.Event]] = {}

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session_id)

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description", details["text"]))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(arg.get("value", "")) for arg in params["args"]))
        for event in self._waiting.pop(method, []):
            event.set()

    async def navigate(self, url: str) -> None:
        """Go to ``url`` and wait for its load event."""
        loaded = trio.Event()
        self._waiting.setdefault("Page.loadEventFired", []).append(loaded)
        result = await self.send("Page.navigate", {"url": url})
        if "errorText" in result:
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        await loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression; a promise is awaited."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description", details["text"]))
        return result["result"].get("value")

    async def wait_until(self, predicate: str) -> Any:
        """Wait for a JavaScript expression to be truthy, checked after each DOM change.

        Returns its value. No polling: a MutationObserver in the page re-checks it.
        """
        return await self.evaluate(
            f"""new Promise((resolve) => {{
                const check = () => {{
                    const value = ({predicate});
                    if (value) {{ observer.disconnect(); resolve(value); }}
                    return value;
                }};
                const observer = new MutationObserver(check);
                if (!check()) observer.observe(document, {{
                    subtree: true, childList: true, characterData: true, attributes: true
                }});
            }})"""
        )

    async def texts(self, selector: str) -> list[str]:
        """The text of each element matching ``selector``."""
        return await self.evaluate(  # type: ignore[no-any-return]
            f"Array.from(document.querySelectorAll({json.dumps(selector)}),"
            " (element) => element.textContent)"
        )

    async def wait_for_text(self, selector: str, text: str) -> None:
        """Wait until an element matching ``selector`` has exactly the text ``text``."""
        await self.wait_until(
            f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
            f".some((element) => element.textContent === {json.dumps(text)})"
        )

    async def click(self, selector: str) -> None:
        """Click the middle of the element with the mouse, as a person would."""
        x, y = await self.evaluate(
            f"""(() => {{
                const element = document.querySelector({json.dumps(selector)});
                if (!element) throw new Error("no element matches " + {json.dumps(selector)});
                element.scrollIntoView({{block: "center"}});
                const box = element.getBoundingClientRect();
                return [box.x + box.width / 2, box.y + box.height / 2];
            }})()"""
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    async def type(self, selector: str, text: str) -> None:
        """Click into a field, select what it holds, and type ``text`` over it."""
        await self.click(selector)
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        await self.send("Input.insertText", {"text": text})

    async def press_enter(self) -> None:
        """Press Enter in the focused element (in a form field: submits the form)."""
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        await self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
        await self.send("Input.dispatchKeyEvent", {"type": "keyUp", **key})

    async def screenshot(self, path: Path) -> None:
        """Save what the page shows as a PNG."""
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        await trio.Path(path).write_bytes(base64.b64decode(result["data"]))

    async def close(self) -> None:
        """Close the tab, as a person closing it would (its WebSockets go away)."""
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})


@asynccontextmanager
async def launch(
    executable: str, user_data_dir: Path, *, startup_timeout: float = 20
) -> AsyncIterator[Browser]:
    """Run a headless Chromium with a fresh profile for the block, connected over DevTools.

    ``startup_timeout`` bounds its start and the connection to it; the caller bounds the rest.
    """
    command = [executable, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"]
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: its helpers go with it
    )
    assert process.stderr is not None
    stderr = _Stderr(process.stderr)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(startup_timeout):
                url = await stderr.devtools_url()
            nursery.start_soon(stderr.drain)
            async with trio_websocket.open_websocket_url(
                url,
                max_message_size=64 * 2**20,  # screenshots
                connect_timeout=startup_timeout,
                disconnect_timeout=2,
            ) as ws:
                browser = Browser(ws)
                nursery.start_soon(browser.read_messages)
                try:
                    yield browser
                except CDPError as error:
                    error.add_note("Chromium's stderr ends with:\n" + stderr.tail())
                    raise
            nursery.cancel_scope.cancel()
    finally:
        # Signal the group (Chromium and its helpers) while Chromium is not yet reaped, so that
        # its process group id cannot have been reused.
        with trio.CancelScope(shield=True):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
