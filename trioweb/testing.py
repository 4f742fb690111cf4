"""An in-process test client: the app's ASGI interface driven over trio memory channels.

No sockets, no threads: everything runs in the test's own trio run, so it is deterministic and
works with pytest-trio's ``autojump_clock``. It behaves like hypercorn where that matters to a
test: the queue toward the app holds 10 events (for a trioweb app, the handshake and the
disconnect; its messages go to the inbox, below), a denied handshake arrives as an HTTP response,
and the client answers the app's close as a real client would. One difference on purpose: the
client's close code reaches the app as sent (hypercorn reports 1006 for it).

A trioweb app takes the client's messages straight into the connection's inbox (the
``trioweb.direct_delivery`` ASGI extension), by the same code its reader task runs for each
message from ASGI receive(): same limits, same overflow policy, one task wake-up less per
message. The handshake and the disconnect still go through receive(), as does every message of
an app that is not trioweb's, or that a middleware reaches through a receive() of its own.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlencode

import trio
from trio.lowlevel import Task

from ._background import describe
from ._buffer import wake_all, wake_one
from ._connection import DIRECT_DELIVERY
from ._failures import leaves
from ._timeouts import WaitTimer
from ._types import ASGIApp, Message
from .close_codes import as_close_code
from .datastructures import Headers

__all__ = [
    "TestClient",
    "TestResponse",
    "TestWebSocket",
    "WebSocketClosed",
    "WebSocketDenied",
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


class TestResponse:
    """An HTTP response as the test client received it."""

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        #: The HTTP status.
        self.status_code = status_code
        #: The response headers, case-insensitive.
        self.headers = headers
        #: The raw body.
        self.content = content

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.content)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status_code}>"


def _split_target(path: str) -> tuple[str, bytes, bytes]:
    if not path.startswith("/"):
        raise ValueError(f"test client paths start with '/', not {path!r}")
    # By hand, not urlsplit: a target such as "//host/x" is a path here, not a network location.
    path = path.partition("#")[0]
    raw_path, _, query = path.partition("?")
    return unquote(raw_path), raw_path.encode(), query.encode()


def _raw_headers(headers: Mapping[str, str] | None, defaults: dict[str, str]) -> list[Any]:
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

    def _attach(self, deliver: Callable[[str | bytes], bool]) -> None:
        self._deliver = deliver

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


class TestClient:
    """Drive an app in-process: ``async with TestClient(app) as client: ...``.

    Entering runs the app's startup (a failure raises ``RuntimeError``), leaving runs its
    shutdown. ``receive_timeout`` bounds every wait for the app, so a test fails with a clear
    message instead of hanging.

    ``direct_delivery`` (on by default) hands each message of a test socket straight to a
    trioweb app's connection, through the same per-message code its reader task runs (the
    limits, the inbox bound, the idle timer), which is about twice as fast. Off, every message
    goes through ASGI ``receive()`` and the app's reader task, as behind a server. An app that
    wraps ``receive()`` in a middleware always gets the second way.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: ASGIApp,
        *,
        receive_timeout: float = 5.0,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        host: str = "testserver",
        direct_delivery: bool = True,
    ) -> None:
        self.app = app
        #: Whether test sockets hand messages straight to a trioweb connection.
        self.direct_delivery = direct_delivery
        self.receive_timeout = receive_timeout
        self._timer: WaitTimer | None = None
        self._client = client
        self._host = host
        self._nursery: trio.Nursery | None = None
        self._lifespan_to_app: trio.MemorySendChannel[Message] | None = None
        self._lifespan_from_app: trio.MemoryReceiveChannel[Message] | None = None
        self._state: dict[str, Any] = {}
        self._lifespan_supported = True
        #: What the app's lifespan raised, if it did after answering the startup.
        self._lifespan_crash: Exception | None = None

    # -- lifespan -----------------------------------------------------------------------

    @property
    def receive_timeout(self) -> float:
        """Seconds any wait for the app may last before it fails with ``TimeoutError``
        (``math.inf``: no limit); a socket keeps the value it had when it was opened."""
        return self._receive_timeout

    @receive_timeout.setter
    def receive_timeout(self, seconds: float) -> None:
        if not seconds > 0:  # (NaN too)
            raise ValueError(f"receive_timeout is a number of seconds > 0, not {seconds!r}")
        self._receive_timeout = seconds

    async def __aenter__(self) -> TestClient:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._timer = WaitTimer()
        self._nursery.start_soon(self._timer.run)
        to_app, app_inbox = trio.open_memory_channel[Message](SERVER_QUEUE_SIZE)
        app_outbox, from_app = trio.open_memory_channel[Message](math.inf)
        self._lifespan_to_app, self._lifespan_from_app = to_app, from_app
        self._lifespan_crash = None

        async def run_lifespan() -> None:
            async with app_outbox:
                scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
                # An app without lifespan support returns or raises before it answers the
                # startup: go on without it, as servers do. After that answer, what it raises
                # is a crash, which leaving the client reports.
                try:
                    await self.app(scope, app_inbox.receive, app_outbox.send)
                except Exception as exc:
                    self._lifespan_crash = exc

        self._nursery.start_soon(run_lifespan)
        try:
            await to_app.send({"type": "lifespan.startup"})
            reply = await self._lifespan_reply("startup")
            if reply is None:
                self._lifespan_supported = False
                self._lifespan_crash = None
            elif reply["type"] != "lifespan.startup.complete":
                raise RuntimeError(f"app startup failed: {reply.get('message', '')}")
        except BaseException:
            self._nursery.cancel_scope.cancel()
            await self._nursery_manager.__aexit__(None, None, None)
            self._nursery = self._timer = None
            raise
        return self

    async def _lifespan_reply(self, phase: str) -> Message | None:
        """The app's answer; ``None`` if its lifespan ended without one (no lifespan support)."""
        assert self._lifespan_from_app is not None
        try:
            with trio.fail_after(self.receive_timeout):
                return await self._lifespan_from_app.receive()
        except trio.TooSlowError:
            raise TimeoutError(
                f"the app's {phase} took longer than {self.receive_timeout} s"
            ) from None
        except trio.EndOfChannel:
            return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None and self._lifespan_to_app is not None
        try:
            if self._lifespan_supported:
                await self._lifespan_to_app.send({"type": "lifespan.shutdown"})
                reply = await self._lifespan_reply("shutdown")
                if reply is None:
                    crash, self._lifespan_crash = self._lifespan_crash, None
                    raise RuntimeError(
                        "the app's lifespan ended without completing shutdown"
                        + (f": {describe(crash)}" if crash is not None else "")
                    ) from crash
                if reply["type"] != "lifespan.shutdown.complete" and exc_type is None:
                    raise RuntimeError(f"app shutdown failed: {reply.get('message', '')}")
        finally:
            assert self._timer is not None
            self._timer.stop()
            try:
                await self._nursery_manager.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The nursery wraps the test body's own exception: let it through unwrapped.
                others = [
                    e for e in leaves(group) if e is not exc and not isinstance(e, trio.Cancelled)
                ]
                if exc is None or others:
                    raise
            finally:
                self._nursery = self._timer = None
        crash, self._lifespan_crash = self._lifespan_crash, None  # (keeps no frames alive)
        if crash is not None and exc_type is None:
            raise RuntimeError(
                f"the app's lifespan raised after completing shutdown: {describe(crash)}"
            ) from crash
        return None

    # -- WebSocket ----------------------------------------------------------------------

    @asynccontextmanager
    async def websocket(
        self,
        path: str,
        subprotocols: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[TestWebSocket]:
        """Connect to the app's WebSocket route at ``path`` (a query string is fine).

        Raises :class:`WebSocketDenied` if the app refuses the handshake. Leaving the block
        closes the socket (code 1000) if it is still open and waits until the app's handler
        and its ``after_websocket`` hooks have finished.
        """
        decoded, raw_path, query = _split_target(path)
        defaults = {
            "host": self._host,
            "connection": "upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
        }
        if subprotocols:
            defaults["sec-websocket-protocol"] = ", ".join(subprotocols)
        to_app, app_inbox = trio.open_memory_channel[Message](SERVER_QUEUE_SIZE)
        assert self._timer is not None, "use the TestClient inside 'async with'"
        socket = TestWebSocket(to_app, self.receive_timeout, self._timer)
        app_receive = app_inbox.receive  # (one bound method: the app checks it is this one)
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        if self.direct_delivery:
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
            "headers": _raw_headers(headers, defaults),
            "client": self._client,
            "server": ("testserver", 80),
            "subprotocols": list(subprotocols or []),
            "state": dict(self._state),
            "extensions": extensions,
        }
        app_done = trio.Event()

        async def run_app() -> None:
            try:
                async with app_inbox:
                    await self.app(scope, app_receive, socket._app_send)
            finally:
                socket._app_has_ended()
                app_done.set()

        # The app runs in the client's nursery, not in one opened here: a nursery around the
        # ``yield`` would wrap every exception of the test body in an ExceptionGroup.
        assert self._nursery is not None, "use the TestClient inside 'async with'"
        self._nursery.start_soon(run_app)

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

    # -- HTTP ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
    ) -> TestResponse:
        """Send one HTTP request to the app and collect its whole response."""
        decoded, raw_path, query = _split_target(path)
        if params:
            query = (
                query.decode() + ("&" if query else "") + urlencode(params, doseq=True)
            ).encode()
        defaults = {"host": self._host}
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            defaults["content-type"] = "application/json"
        elif content is not None:
            body = content.encode() if isinstance(content, str) else content
        if body:
            defaults["content-length"] = str(len(body))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": decoded,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": _raw_headers(headers, defaults),
            "client": self._client,
            "server": ("testserver", 80),
            "state": dict(self._state),
        }
        sent_body = False
        response_done = trio.Event()

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await response_done.wait()
            return {"type": "http.disconnect"}

        start: Message | None = None
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body"):
                    response_done.set()

        try:
            with trio.fail_after(self.receive_timeout):
                await self.app(scope, receive, send)
        except trio.TooSlowError:
            raise TimeoutError(
                f"{method} {path} got no complete response within {self.receive_timeout} s"
            ) from None
        if start is None:
            raise RuntimeError(f"the app sent no response to {method} {path}")
        return TestResponse(
            start["status"], Headers(raw=start.get("headers", [])), b"".join(chunks)
        )

    async def get(self, path: str, **kwargs: Any) -> TestResponse:
        """Send a GET request."""
        return await self.request("GET", path, **kwargs)

    async def head(self, path: str, **kwargs: Any) -> TestResponse:
        """Send a HEAD request."""
        return await self.request("HEAD", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> TestResponse:
        """Send a POST request."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> TestResponse:
        """Send a PUT request."""
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> TestResponse:
        """Send a PATCH request."""
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> TestResponse:
        """Send a DELETE request."""
        return await self.request("DELETE", path, **kwargs)
