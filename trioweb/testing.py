"""An in-process test client: the app's ASGI interface driven over trio memory channels.

No sockets, no threads: everything runs in the test's own trio run, so it is deterministic and
works with pytest-trio's ``autojump_clock``. It behaves like hypercorn where that matters to a
test: the queue toward the app holds 10 events (for a trioweb app, the handshake; its messages
and its end go to the connection, below), a denied handshake arrives as an HTTP response,
and the client answers the app's close as a real client would. One difference on purpose: the
client's close code reaches the app as sent (hypercorn reports 1006 for it).

A trioweb app takes the client's messages straight into the connection's inbox (the
``trioweb.direct_delivery`` ASGI extension), by the same code its reader task runs for each
message from ASGI receive(): same limits, same overflow policy, one task wake-up less per
message; and the client's close straight to the connection, as trioweb's own stream reports
it, so that the app runs no reader task for a test socket. The handshake still goes through
receive(), as does everything of an app that is not trioweb's, or that a middleware reaches
through a receive() of its own.
"""

from __future__ import annotations

import json as jsonlib
import math
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import trio

from ._background import describe
from ._failures import leaves
from ._test_scope import raw_headers, split_target
from ._test_socket import (
    SERVER_QUEUE_SIZE,
    TestWebSocket,
    WebSocketClosed,
    WebSocketDenied,
    connect,
)
from ._timeouts import WaitTimer
from ._types import ASGIApp, Message
from .datastructures import Headers

__all__ = [
    "TestClient",
    "TestResponse",
    "TestWebSocket",
    "WebSocketClosed",
    "WebSocketDenied",
]


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


class TestClient:
    """Drive an app in-process: ``async with TestClient(app) as client: ...``.

    Entering runs the app's startup (a failure raises ``RuntimeError``), leaving runs its
    shutdown. ``receive_timeout`` bounds every wait for the app, so a test fails with a clear
    message instead of hanging.

    ``direct_delivery`` (on by default) hands each message of a test socket straight to a
    trioweb app's connection, through the same per-message code its reader task runs (the
    limits, the inbox bound, the idle timer), and its close as trioweb's stream reports it: a
    round trip costs about half of what it costs the other way. Off, every message and the
    close go through ASGI ``receive()`` and the app's reader task, as behind other servers. An
    app that wraps ``receive()`` in a middleware always gets the second way.
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

    def websocket(
        self,
        path: str,
        subprotocols: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[TestWebSocket]:
        """Connect to the app's WebSocket route at ``path`` (a query string is fine).

        Raises :class:`WebSocketDenied` if the app refuses the handshake. Leaving the block
        closes the socket (code 1000) if it is still open and waits until the app's handler
        and its ``after_websocket`` hooks have finished.
        """
        assert self._timer is not None, "use the TestClient inside 'async with'"
        assert self._nursery is not None, "use the TestClient inside 'async with'"
        return connect(
            self.app,
            self._nursery,
            self._timer,
            path=path,
            subprotocols=subprotocols,
            headers=headers,
            receive_timeout=self.receive_timeout,
            host=self._host,
            client=self._client,
            state=self._state,
            direct_delivery=self.direct_delivery,
        )

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
        decoded, raw_path, query = split_target(path)
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
            "headers": raw_headers(headers, defaults),
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
