"""A WebSocket of the in-process test client: the client's end, and the app run against it.

``trioweb.testing`` is the public face (``TestClient.websocket()`` gives a
:class:`TestWebSocket`); the socket and the code that runs the app's side of it live here,
together, so that neither reaches into the other.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import msgspec
import trio
from trio.lowlevel import Task

from ._buffer import wake_all, wake_one
from ._timeouts import WaitTimer
from ._typed import reader_for
from ._types import DIRECT_DELIVERY, ASGIApp, DirectPeer, Message
from .close_codes import as_close_code
from .datastructures import Headers

__all__ = [
    "SERVER_QUEUE_SIZE",
    "TestWebSocket",
    "WebSocketClosed",
    "WebSocketDenied",
    "connect",
    "raw_headers",
    "split_target",
]

# hypercorn's default max_app_queue_size: the events a server buffers toward the app.
SERVER_QUEUE_SIZE = 10


class WebSocketClosed(Exception):
    """The app closed the socket; ``code`` and ``reason`` are what it sent."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        #: The close code the app sent (a :class:`~trioweb.CloseCode` when it has a name).
        self.code = as_close_code(code)
        #: The close reason the app sent.
        self.reason = reason

    def __str__(self) -> str:
        return f"the app closed the WebSocket with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


class WebSocketDenied(Exception):
    """The app refused the handshake with an HTTP response."""

    def __init__(self, status_code: int, headers: Headers, body: bytes) -> None:
        super().__init__(status_code, body)
        #: The HTTP status of the denial.
        self.status_code = status_code
        #: The denial's headers.
        self.headers = headers
        #: The denial's body.
        self.body = body

    def __str__(self) -> str:
        return f"handshake denied with HTTP {self.status_code}: {self.body!r}"


def split_target(path: str) -> tuple[str, bytes, bytes]:
    if not path.startswith("/"):
        raise ValueError(f"test client paths start with '/', not {path!r}")
    # By hand, not urlsplit: a target such as "//host/x" is a path here, not a network location.
    path = path.partition("#")[0]
    raw_path, _, query = path.partition("?")
    return unquote(raw_path), raw_path.encode(), query.encode()


def raw_headers(headers: Mapping[str, str] | None, defaults: dict[str, str]) -> list[Any]:
    merged = {**defaults, **{k.lower(): v for k, v in (headers or {}).items()}}
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]


# What an app may send in each state of a WebSocket scope, and the state it leads to.
_APP_TRANSITIONS: dict[str, dict[str, str]] = {
    "handshake": {
        "websocket.accept": "connected",
        "websocket.close": "closed",
        "websocket.http.response.start": "response",
    },
    "response": {"websocket.http.response.body": "response"},
    "connected": {"websocket.send": "connected", "websocket.close": "closed"},
    "closed": {},
}


class TestWebSocket:
    """The client end of a WebSocket connected to the app under test."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, to_app: trio.MemorySendChannel[Message], timeout: float, timer: WaitTimer
    ) -> None:
        self._to_app = to_app
        # What the app sent and the client has not read yet, the tasks waiting for it, and
        # whether the app has ended: a memory channel would do, but a bounded wait on one
        # takes a cancel scope, and this is on every round trip.
        self._from_app: deque[Message] = deque()
        self._readers: list[Task] = []
        self._app_ended = False
        self._timeout = timeout
        self._timer = timer
        self._closed: WebSocketClosed | None = None
        self._client_closed = False
        # The app's direct way in for messages, once it attached one (trioweb apps do).
        self._deliver: Callable[[str | bytes], bool] | None = None
        #: Where the app is in the ASGI WebSocket state machine, as the server sees it.
        self._app_state = "handshake"
        #: The subprotocol the app chose.
        self.subprotocol: str | None = None
        #: The headers of the app's accept.
        self.headers = Headers()

    async def _app_send(self, message: Message) -> None:
        """The app's ASGI send, checked against the protocol as hypercorn checks it."""
        kind = message.get("type")
        state = self._app_state
        if self._client_closed and state in ("connected", "closed"):
            return  # the peer is gone: like hypercorn, drop what comes (without yielding)
        allowed = _APP_TRANSITIONS[state]
        if kind not in allowed:
            raise RuntimeError(f"ASGI protocol error: the app sent {kind!r} in state {state!r}")
        next_state = allowed[kind]
        if kind == "websocket.http.response.body" and not message.get("more_body"):
            next_state = "closed"
        self._app_state = next_state
        self._from_app.append(message)
        wake_one(self._readers)

    def _app_has_ended(self) -> None:
        self._app_ended = True
        wake_all(self._readers)

    async def _next_from_app(self, what: str) -> Message:
        # A full checkpoint, as MemoryReceiveChannel.receive() is.
        await trio.lowlevel.checkpoint_if_cancelled()
        messages = self._from_app
        if messages or self._app_ended:
            await trio.lowlevel.cancel_shielded_checkpoint()
        deadline = None
        while not messages:
            if self._app_ended:
                raise RuntimeError(f"the app's handler ended without sending a {what}")
            if deadline is None:  # (once: another reader taking the message keeps the limit)
                deadline = trio.current_time() + self._timeout
            if not await self._timer.park(self._readers, deadline):
                raise TimeoutError(
                    f"no {what} from the app within {self._timeout} s "
                    "(TestClient(receive_timeout=...) changes the limit)"
                )
        return messages.popleft()

    async def _handshake(self) -> None:
        message = await self._next_from_app("handshake reply")
        kind = message["type"]
        if kind == "websocket.accept":
            self.subprotocol = message.get("subprotocol")
            self.headers = Headers(raw=message.get("headers") or [])
        elif kind == "websocket.close":
            raise WebSocketDenied(403, Headers(), b"")
        elif kind == "websocket.http.response.start":
            body = b""
            while True:
                part = await self._next_from_app("denial body")
                body += part.get("body", b"")
                if not part.get("more_body"):
                    break
            raise WebSocketDenied(message["status"], Headers(raw=message.get("headers", [])), body)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} during the handshake")

    # -- sending ------------------------------------------------------------------------

    async def _put(self, message: Message) -> None:
        if self._client_closed:
            raise RuntimeError("this test WebSocket is already closed")
        # What MemorySendChannel.send() does, with the timeout armed only for a wait: room in
        # the queue costs no cancel scope.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._to_app.send_nowait(message)
        except trio.WouldBlock:
            pass
        except trio.BrokenResourceError:
            raise RuntimeError("the app's handler has already ended") from None
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        try:
            with trio.move_on_after(self._timeout) as scope:
                await self._to_app.send(message)
        except trio.BrokenResourceError:
            raise RuntimeError("the app's handler has already ended") from None
        if scope.cancelled_caught:
            raise TimeoutError(
                f"the app read nothing for {self._timeout} s while the queue toward it was full"
            )

    def _attach(self, peer: DirectPeer) -> bool:
        # Messages go straight to the connection; the end still goes through receive(), where
        # the test client's own checks of what comes after it live.
        self._deliver = peer.deliver
        return False

    async def _put_data(self, data: str | bytes) -> None:
        deliver = self._deliver
        if deliver is not None and not self._client_closed:
            await trio.lowlevel.checkpoint_if_cancelled()
            if deliver(data):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            self._deliver = None  # the app's reader has stopped: from now on, through receive()
        if isinstance(data, str):
            await self._put({"type": "websocket.receive", "text": data})
        else:
            await self._put({"type": "websocket.receive", "bytes": data})

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message to the app."""
        await self._put_data(message if isinstance(message, str) else bytes(message))

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, not {type(data).__name__}")
        await self._put_data(data)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        if isinstance(data, str):
            raise TypeError("send_bytes() takes bytes, not str (send_text() sends text)")
        await self._put_data(bytes(data))

    async def send_json(self, data: Any) -> None:
        """Send ``data`` as JSON in a text message."""
        await self.send_text(jsonlib.dumps(data))

    async def send_typed(self, message: Any) -> None:
        """Send ``message`` (a Struct, a dataclass, anything msgspec encodes) as JSON text."""
        await self.send_text(msgspec.json.encode(message).decode())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client's side; the app sees a disconnect with this code."""
        if self._client_closed:
            return
        with contextlib.suppress(RuntimeError):  # the app has ended: nothing left to tell
            await self._put({"type": "websocket.disconnect", "code": int(code), "reason": reason})
        self._client_closed = True

    # -- receiving ----------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The app's next message; raises :class:`WebSocketClosed` once the app has closed."""
        if self._closed is not None:
            raise WebSocketClosed(self._closed.code, self._closed.reason)
        message = await self._next_from_app("message")
        if message["type"] == "websocket.send":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        if message["type"] == "websocket.close":
            self._closed = WebSocketClosed(message.get("code", 1000), message.get("reason") or "")
            # A real client answers the close; the app is then told the handshake is done.
            if not self._client_closed:
                await self.close(self._closed.code, self._closed.reason)
            raise WebSocketClosed(self._closed.code, self._closed.reason)
        raise RuntimeError(f"unexpected ASGI message {message['type']!r} from the app")

    async def receive_text(self) -> str:
        """The next message, which must be text."""
        message = await self.receive()
        if not isinstance(message, str):
            raise AssertionError(f"expected a text message, got bytes {message!r}")
        return message

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary."""
        message = await self.receive()
        if not isinstance(message, bytes):
            raise AssertionError(f"expected a binary message, got text {message!r}")
        return message

    async def receive_json(self) -> Any:
        """The next message, parsed as JSON."""
        return jsonlib.loads(await self.receive())

    async def receive_typed(self, type: Any) -> Any:
        """The next message, decoded and validated as ``type`` (``Welcome | Error``) with
        msgspec; a message that does not fit raises msgspec's ``ValidationError``."""
        return reader_for(type).decode(await self.receive())


@asynccontextmanager
async def connect(
    app: ASGIApp,
    nursery: trio.Nursery,
    timer: WaitTimer,
    *,
    path: str,
    subprotocols: list[str] | None,
    headers: Mapping[str, str] | None,
    receive_timeout: float,
    host: str,
    client: tuple[str, int],
    state: dict[str, Any],
    direct_delivery: bool,
) -> AsyncIterator[TestWebSocket]:
    """Open a test socket to ``app``, running the app in ``nursery``; see
    ``TestClient.websocket``."""
    decoded, raw_path, query = split_target(path)
    defaults = {
        "host": host,
        "connection": "upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
    }
    if subprotocols:
        defaults["sec-websocket-protocol"] = ", ".join(subprotocols)
    to_app, app_inbox = trio.open_memory_channel[Message](SERVER_QUEUE_SIZE)
    socket = TestWebSocket(to_app, receive_timeout, timer)
    app_receive = app_inbox.receive  # (one bound method: the app checks it is this one)
    extensions: dict[str, Any] = {"websocket.http.response": {}}
    if direct_delivery:
        extensions[DIRECT_DELIVERY] = {"attach": socket._attach, "receive": app_receive}
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": decoded,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": raw_headers(headers, defaults),
        "client": client,
        "server": ("testserver", 80),
        "subprotocols": list(subprotocols or []),
        "state": dict(state),
        "extensions": extensions,
    }
    app_done = trio.Event()

    async def run_app() -> None:
        try:
            async with app_inbox:
                await app(scope, app_receive, socket._app_send)
        finally:
            socket._app_has_ended()
            app_done.set()

    # The app runs in the client's nursery, not in one opened here: a nursery around the
    # ``yield`` would wrap every exception of the test body in an ExceptionGroup.
    nursery.start_soon(run_app)

    async def wait_for_app() -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(socket._timeout):
            await app_done.wait()
        if not app_done.is_set():
            raise TimeoutError(
                f"the app's handler for {path} did not finish within "
                f"{socket._timeout} s after the client closed"
            )

    try:
        await to_app.send({"type": "websocket.connect"})
        await socket._handshake()
    except BaseException:
        await wait_for_app()
        raise
    try:
        yield socket
    finally:
        if socket._closed is None and not socket._client_closed:
            with trio.CancelScope(shield=True):
                await socket.close(1000)
        await wait_for_app()
