"""A WebSocket of the in-process test client: the client's end, and the app run against it.

``trioweb.testing`` is the public face (``TestClient.websocket()`` gives a
:class:`TestWebSocket`); the socket and the code that runs the app's side of it live here,
together, so that neither reaches into the other.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from trio.lowlevel import (
    Task,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
)

from ._buffer import wake_all, wake_one
from ._test_scope import websocket_scope
from ._timeouts import WaitTimer
from ._typed import reader_for
from ._types import DIRECT_DELIVERY, SENT, ASGIApp, DirectPeer, Message
from ._yields import yields_so_far
from .close_codes import as_close_code
from .datastructures import Headers

__all__ = [
    "SERVER_QUEUE_SIZE",
    "TestWebSocket",
    "WebSocketClosed",
    "WebSocketDenied",
    "connect",
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
        # The app's direct way in, once it attached one (trioweb apps do): its messages, and
        # its end (the client's close).
        self._peer: DirectPeer | None = None
        # This task's count of trips through trio's scheduler when the last receive returned
        # (``yields_so_far``): a receive that finds its message there yields only if the task
        # has not been through the scheduler since (in the send before it, say).
        self._points: int | None = None
        #: Where the app is in the ASGI WebSocket state machine, as the server sees it.
        self._app_state = "handshake"
        #: The subprotocol the app chose.
        self.subprotocol: str | None = None
        #: The headers of the app's accept.
        self.headers = Headers()

    def _app_send(self, message: Message) -> Awaitable[None]:
        """The app's ASGI send, checked against the protocol as hypercorn checks it."""
        if (
            message.get("type") == "websocket.send"
            and self._app_state == "connected"
            and not self._client_closed
        ):
            # Every message of an open socket: queued right here, and SENT, done, rather than a
            # coroutine made and run for each message (the app's send then yields itself).
            self._from_app.append(message)
            if self._readers:
                wake_one(self._readers)
            return SENT
        return self._app_send_checked(message)

    async def _app_send_checked(self, message: Message) -> None:
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
        # A full checkpoint, as MemoryReceiveChannel.receive() is, except that a message
        # already there costs no second trip through the scheduler when the task made one
        # since its last receive (in its send): see docs/performance.md, "The test client".
        # (receive() has this inline.)
        await checkpoint_if_cancelled()
        task = current_task()
        messages = self._from_app
        if not messages or (points := yields_so_far(task)) is None or points == self._points:
            await cancel_shielded_checkpoint()
            if not messages:
                await self._wait_from_app(what)
            points = yields_so_far(task)
        self._points = points
        return messages.popleft()

    async def _wait_from_app(self, what: str) -> None:
        """Wait until the app has sent something, within the time limit."""
        messages = self._from_app
        deadline = trio.current_time() + self._timeout
        while not messages:
            if self._app_ended:
                raise RuntimeError(f"the app's handler ended without sending a {what}")
            if not await self._timer.park(self._readers, deadline):
                raise TimeoutError(
                    f"no {what} from the app within {self._timeout} s "
                    "(TestClient(receive_timeout=...) changes the limit)"
                )

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
        # Messages go straight to the connection, and so does the end: the app then reads
        # nothing through receive() and runs no reader task, as behind trioweb's stream.
        self._peer = peer
        return True

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message to the app."""
        data = message if isinstance(message, str) else bytes(message)
        peer = self._peer
        if peer is None or self._client_closed:
            return await self._put_data(data)
        await checkpoint_if_cancelled()
        if not peer.deliver(data) and self._app_ended:
            raise RuntimeError("the app's handler has already ended")
        # (Refused while the app still runs: its socket is ending, and the message is dropped,
        # as a server drops what crosses a close.)
        await cancel_shielded_checkpoint()

    async def _put_data(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self._put({"type": "websocket.receive", "text": data})
        else:
            await self._put({"type": "websocket.receive", "bytes": data})

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, not {type(data).__name__}")
        await self.send(data)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        if isinstance(data, str):
            raise TypeError("send_bytes() takes bytes, not str (send_text() sends text)")
        await self.send(data)

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
        # One trip through the scheduler first: a receive that found its message there did
        # not yield, and the app, woken by its own send, has not gone back to waiting yet.
        await checkpoint_if_cancelled()
        await cancel_shielded_checkpoint()
        peer = self._peer
        if peer is not None:
            # And the end lands a trip later, as it did through ASGI receive() (the app's
            # reader, woken, read it in the next one): what the app was about to do (read a
            # message just sent, go back to waiting), it has done.
            await cancel_shielded_checkpoint()
            self._client_closed = True
            peer.disconnected(int(code), reason, False)
            return
        with contextlib.suppress(RuntimeError):  # the app has ended: nothing left to tell
            await self._put({"type": "websocket.disconnect", "code": int(code), "reason": reason})
        self._client_closed = True

    # -- receiving ----------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The app's next message; raises :class:`WebSocketClosed` once the app has closed."""
        if self._closed is not None:
            raise WebSocketClosed(self._closed.code, self._closed.reason)
        # _next_from_app("message"), inline: one coroutine less on every round trip.
        task = current_task()
        messages = self._from_app
        if messages and (points := yields_so_far(task)) is not None and points != self._points:
            await checkpoint_if_cancelled()
        else:
            # One trip through the scheduler (the app, already woken, usually answers in it),
            # then a wait with the time limit if the message is still not there.
            await checkpoint()
            if not messages:
                await self._wait_from_app("message")
            points = yields_so_far(task)
        self._points = points
        message = messages.popleft()
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
    to_app, app_inbox = trio.open_memory_channel[Message](SERVER_QUEUE_SIZE)
    socket = TestWebSocket(to_app, receive_timeout, timer)
    app_receive = app_inbox.receive  # (one bound method: the app checks it is this one)
    extensions: dict[str, Any] = {"websocket.http.response": {}}
    if direct_delivery:
        extensions[DIRECT_DELIVERY] = {"attach": socket._attach, "receive": app_receive}
    scope = websocket_scope(path, subprotocols, headers, host, client, state, extensions)
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
