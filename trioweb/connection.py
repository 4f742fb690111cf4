"""The per-socket runtime: one nursery per connection, one reader task, and the close rules.

Everything a WebSocket connection runs lives in one trio nursery::

    connection nursery
    ├── reader task: the only caller of ASGI receive(); drains it without pause into the inbox,
    │   and turns websocket.disconnect into a cancellation of the whole nursery
    ├── before_websocket hooks, then the handler (in the nursery's own body)
    └── the handler's nursery, only if it asked for one: the tasks it starts
    then: error handlers, the close the outcome calls for, after_websocket hooks

Why a reader that never waits: hypercorn stops reading the TCP stream while its queue toward
the app is full (10 events), so a paused reader would also stall pong replies and the very
disconnect that should end the connection. When the inbox is full, the socket is closed with
1008 instead of blocking.

An in-process client (the test client) may hand messages to :meth:`Connection.deliver`
instead, which runs the reader's own per-message code in the client's task.

The entry point of the ASGI app (``App.__call__``) is here too: a WebSocket scope runs in its
frame, from the handshake to the close.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import (
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
)

from ._buffer import Buffer, park
from ._deflate import Compression
from ._failures import PROTOCOL_ERRORS, sort_failure
from ._types import DEFAULT_CLOSE_TIMEOUT, WIRE_SETTINGS, Message, Receive, Scope, Send
from .close_codes import CloseCode, as_close_code, check_close_code
from .exceptions import HTTPException, WebSocketClose, WebSocketDisconnect, truncate_reason
from .nursery import ConnectionNursery
from .origins import OriginPolicy

if TYPE_CHECKING:
    from .app import App
    from .http import Response
    from .routing import Route
    from .websocket import WebSocket

__all__ = ["Connection", "ConnectionRegistry", "ConnectionState", "asgi_entry"]

logger = logging.getLogger("trioweb")

SHUTDOWN_CLOSE = (CloseCode.GOING_AWAY, "server shutting down")

#: The ASGI extension of an in-process client (trioweb's TestClient) that hands messages
#: straight to the connection: ``{"attach": f, "receive": r}``; if the app was given ``r`` itself
#: as its receive callable (no middleware in between wraps it), it calls
#: ``f(connection.deliver)``.
DIRECT_DELIVERY = "trioweb.direct_delivery"

#: The reader task's name: the one trio would make up, but made once, not once per socket.
_READER_NAME = f"{__name__}.Connection.read_loop"

#: Whether trio counts each task's trips through its scheduler, as ``Task._schedule_points``
#: (``trio.testing.assert_checkpoints`` reads it). It is private: without it, every send yields
#: once more, as it must then.
_COUNTS_YIELDS = hasattr(Task, "_schedule_points")


class ConnectionState(enum.Enum):
    """Where a socket is in its life."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class Connection:
    """The runtime state of one socket. Users hold a :class:`~trioweb.WebSocket` instead."""

    __slots__ = (
        "_accept_sent",
        "_handler_done",
        "_inbox",
        "_receive",
        "_scope",
        "_send",
        "_send_busy",
        "_send_waiters",
        "_silence",
        "_user_scope",
        "close_code",
        "close_reason",
        "close_sent",
        "close_timeout",
        "compression",
        "disconnected",
        "idle_timeout",
        "max_message_size",
        "server_close",
        "state",
        "subprotocol",
        "supports_denial",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        inbox_size: int,
        max_message_size: int | None = None,
        idle_timeout: float | None = None,
        compression: Compression | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self._receive = receive
        #: permessage-deflate for this socket, if the client offers it (None: off).
        self.compression = compression
        #: Seconds the server waits for the client's Close after sending its own.
        self.close_timeout = close_timeout
        #: Messages larger than this many bytes close the socket with 1009.
        self.max_message_size = max_message_size
        #: Seconds without a message from the client before the socket is closed with 1001.
        self.idle_timeout = idle_timeout
        self._send = send
        self._inbox: Buffer[str | bytes] = Buffer(inbox_size)
        # The send lock, built into the connection: a flag, and the tasks waiting for it (a
        # list made on the first contention). A trio.Lock would cost three objects per socket.
        self._send_busy = False
        self._send_waiters: list[Task] | None = None
        self._scope: trio.CancelScope | None = None
        #: The reader's idle-timeout scope, while it runs with one.
        self._silence: trio.CancelScope | None = None
        self._user_scope: trio.CancelScope | None = None
        self._handler_done = False
        #: The accept has gone out: from now on a close is a close frame, not an HTTP 403.
        self._accept_sent = False
        self.state = ConnectionState.CONNECTING
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        #: The app has sent its close (or a denial): the client's answer cancels nothing.
        self.close_sent = False
        #: ASGI websocket.disconnect has arrived: receive() must never be called again.
        self.disconnected = False
        #: A close the server decided on its own (inbox overflow, shutdown).
        self.server_close: tuple[int, str] | None = None
        self.supports_denial = "websocket.http.response" in (scope.get("extensions") or {})

    # -- the handshake ------------------------------------------------------------------

    async def accept(
        self,
        subprotocol: str | None,
        headers: Iterable[tuple[bytes, bytes]],
        offered: list[str],
        *,
        implicit: bool = False,
    ) -> None:
        """Send ``websocket.accept``; ``implicit`` makes it a no-op once already accepted."""
        if subprotocol is not None and subprotocol not in offered:
            raise ValueError(
                f"subprotocol {subprotocol!r} was not offered by the client (offered: {offered})"
            )
        # Like send(): the server's send of the accept is the schedule point, if it yields.
        points = await self._lock_for_send()
        try:
            if self.state is not ConnectionState.CONNECTING:
                if implicit and self.state is ConnectionState.CONNECTED:
                    return
                if self.state is ConnectionState.CLOSED:
                    raise self.disconnect_error()
                raise RuntimeError("accept() called on a WebSocket that is already accepted")
            message: Message = {
                "type": "websocket.accept",
                "headers": list(headers),
                WIRE_SETTINGS: {
                    "max_message_size": self.max_message_size,
                    "compression": self.compression,
                    "close_timeout": self.close_timeout,
                },
            }
            if subprotocol is not None:
                message["subprotocol"] = subprotocol
            await self._server_send(message)
            self._accept_sent = True
            self.subprotocol = subprotocol
            # A close (the app's, or the client's disconnect) may have come while the accept
            # was being sent: it stands.
            if self.state is ConnectionState.CONNECTING:
                self.state = ConnectionState.CONNECTED
        finally:
            await self._unlock_after_send(points)

    async def deny(self, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Refuse the handshake with an HTTP response, or with a plain 403 if the server lacks
        the denial extension."""
        if not 100 <= status <= 599:
            raise ValueError(f"{status} is not an HTTP status")
        raw = [(k.lower(), v) for k, v in headers]
        names = {k for k, _ in raw}
        if body and b"content-type" not in names:
            raw.append((b"content-type", b"text/plain; charset=utf-8"))
        if b"content-length" not in names:
            raw.append((b"content-length", str(len(body)).encode()))
        # Decided under the lock: an accept on its way out (from another task) comes first.
        await self._lock()
        try:
            if self._accept_sent or self.state is not ConnectionState.CONNECTING:
                raise RuntimeError(
                    "reject() called on a WebSocket that is already closed"
                    if self.state is ConnectionState.CLOSED
                    else "reject() is only possible before accept(); after it, use close()"
                )
            self._mark_closed_by_app(None, None)
            with trio.CancelScope(shield=True):
                if not self.supports_denial:
                    await self._server_send(
                        {"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION}
                    )
                    return
                await self._server_send(
                    {"type": "websocket.http.response.start", "status": status, "headers": raw}
                )
                await self._server_send({"type": "websocket.http.response.body", "body": body})
        finally:
            self._unlock()

    # -- messages -----------------------------------------------------------------------

    async def _server_send(self, message: Message) -> None:
        """ASGI send; a protocol error in the server means the peer is lost, not an app bug."""
        try:
            await self._send(message)
        except PROTOCOL_ERRORS as exc:
            raise self._send_failed(message, exc) from None

    def _send_failed(self, message: Message, exc: BaseException) -> WebSocketDisconnect:
        # The client broke the protocol (data before the handshake's answer, say) and the
        # server can no longer talk to it: the connection is gone, and it is the client's
        # doing, so no traceback and no 1011.
        logger.info("lost a connection: the server could not send %s (%s)", message["type"], exc)
        self._on_transport_lost()
        return self.disconnect_error()

    def _on_transport_lost(self) -> None:
        self.disconnected = True  # nothing more is expected from this peer
        if self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CLOSED
            self.close_code = CloseCode.ABNORMAL_CLOSURE
            self.close_reason = ""
        self._inbox.close()
        if self._scope is not None:
            self._scope.cancel()

    def disconnect_error(self) -> WebSocketDisconnect:
        """The exception that send and receive raise on a closed socket."""
        return WebSocketDisconnect(
            self.close_code if self.close_code is not None else CloseCode.ABNORMAL_CLOSURE,
            self.close_reason or "",
        )

    # -- the send lock: serialises senders; FIFO; a waiter that is cancelled leaves the queue

    async def _lock(self) -> None:
        """Take the send lock as ``trio.Lock.acquire`` does: always a full checkpoint."""
        await checkpoint_if_cancelled()
        if self._send_busy:
            await self._wait_for_lock()
        else:
            self._send_busy = True
            await cancel_shielded_checkpoint()

    async def _lock_for_send(self) -> int:
        """Take the send lock for a send: a cancel point, and no yield when it is free.

        Returns trio's count of this task's yields, for :meth:`_unlock_after_send`.
        """
        await checkpoint_if_cancelled()
        points = current_task()._schedule_points if _COUNTS_YIELDS else -1
        if self._send_busy:
            await self._wait_for_lock()
        else:
            self._send_busy = True
        return points

    async def _unlock_after_send(self, points: int) -> None:
        """Release the send lock; yield once if nothing yielded since :meth:`_lock_for_send`."""
        self._unlock()
        if not _COUNTS_YIELDS or current_task()._schedule_points == points:
            await cancel_shielded_checkpoint()

    async def _wait_for_lock(self) -> None:
        if self._send_waiters is None:
            self._send_waiters = []
        await park(self._send_waiters)  # _unlock() hands the lock over: it stays busy

    def _unlock(self) -> None:
        waiters = self._send_waiters
        if waiters:
            reschedule(waiters.pop(0))
        else:
            self._send_busy = False

    async def send(self, message: Message) -> None:
        """Send one ASGI message; a checkpoint even where the server does not yield.

        The hot path of every message out, so it takes the lock without yielding and lets the
        server's own send be the schedule point: hypercorn yields on every send to a live peer
        (its lock, then the socket). It returns without yielding once the peer is gone, and a
        send loop must not spin then: if the server did not yield, this does.
        """
        await checkpoint_if_cancelled()
        task = current_task()
        points = task._schedule_points if _COUNTS_YIELDS else -1
        if self._send_busy:
            await self._wait_for_lock()
        else:
            self._send_busy = True
        try:
            if self.state is not ConnectionState.CONNECTED:
                raise self.disconnect_error()
            await self._send(message)
        except PROTOCOL_ERRORS as exc:
            raise self._send_failed(message, exc) from None
        finally:
            waiters = self._send_waiters
            if waiters:
                reschedule(waiters.pop(0))  # the lock goes to the next sender, still busy
            else:
                self._send_busy = False
            if not _COUNTS_YIELDS or task._schedule_points == points:
                await cancel_shielded_checkpoint()

    # -- closing ------------------------------------------------------------------------

    def _mark_closed_by_app(self, code: int | None, reason: str | None) -> None:
        self.state = ConnectionState.CLOSED
        self.close_sent = True
        self.close_code = code
        self.close_reason = reason
        self._inbox.close()
        if self._handler_done and self._user_scope is not None:
            # The handler has returned and the socket is closed: nothing may outlive it.
            self._user_scope.cancel()

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (HTTP 403 before accept); ``RuntimeError`` if already closed."""
        code = check_close_code(code)
        reason = truncate_reason(reason)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.state is ConnectionState.CLOSED:
            how = "by the app" if self.close_sent else f"by the client (code {self.close_code})"
            raise RuntimeError(f"close() called on a WebSocket already closed {how}")
        # Mark first: every other task's send or receive fails from this instant on. Shielded,
        # because a socket marked closed whose close never went out gets 1011 from hypercorn.
        self._mark_closed_by_app(code, reason)
        with trio.CancelScope(shield=True):
            await self._lock()
            try:
                if not self._accept_sent:
                    # No accept went out (none is on its way: we hold the lock): this close
                    # answers the handshake with HTTP 403, and is no close code.
                    self.close_code = self.close_reason = None
                await self._server_send({"type": "websocket.close", "code": code, "reason": reason})
            finally:
                self._unlock()

    def handler_returned(self) -> None:
        """The handler is done: if the socket is closed, cancel the tasks it left behind."""
        self._handler_done = True
        if self.state is ConnectionState.CLOSED and self._user_scope is not None:
            self._user_scope.cancel()

    def shut_down(self, code: int, reason: str) -> None:
        """Decide to close from the server's side: cancel everything; the close follows."""
        if self.server_close is None:
            self.server_close = (code, reason)
        if self._scope is not None:
            self._scope.cancel()

    # -- the reader ---------------------------------------------------------------------

    def _on_disconnect(self, message: Message) -> None:
        self.disconnected = True
        if self.state is ConnectionState.CLOSED:
            return  # the answer to our own close: it cancels nothing
        self.state = ConnectionState.CLOSED
        self.close_code = as_close_code(int(message.get("code") or CloseCode.NO_STATUS_RECEIVED))
        self.close_reason = message.get("reason") or ""
        self._inbox.close()
        if self._scope is not None:
            self._scope.cancel()

    async def read_loop(self) -> None:
        """Drain ASGI receive() into the inbox until the client disconnects."""
        receive = self._receive
        idle = self.idle_timeout
        if idle is None:
            while self._take_event(await receive()):
                pass
            return
        # One scope for the whole loop, its deadline pushed back by every message. (The loop
        # is written twice rather than inside a null context manager: that would keep a bound
        # method alive for the socket's whole life.)
        silence = self._silence = trio.CancelScope()
        with silence:
            while True:
                silence.deadline = trio.current_time() + idle
                if not self._take_event(await receive()):
                    return
        if silence.cancelled_caught and self.state is not ConnectionState.CLOSED:
            self.shut_down(CloseCode.GOING_AWAY, f"idle for more than {idle:g} s")

    def _take_event(self, message: Message) -> bool:
        """One ASGI event for the reader; ``False`` once it is the disconnect."""
        kind = message["type"]
        if kind == "websocket.receive":
            data: str | bytes | None = message.get("text")
            self._take(data if data is not None else message.get("bytes") or b"")
        elif kind == "websocket.disconnect":
            self._on_disconnect(message)
            return False
        return True

    def _take(self, data: str | bytes) -> None:
        """One message from the client: into the inbox, or the close its size or an overflow
        calls for."""
        limit = self.max_message_size
        # A message of n characters is at most 4n bytes in UTF-8: up to a quarter of the
        # limit, no size needs computing.
        if limit is not None and len(data) * 4 > limit and (size := _oversize(data, limit)):
            self.shut_down(
                CloseCode.MESSAGE_TOO_BIG, f"message of {size} bytes over the limit of {limit}"
            )
        elif not self._inbox.put(data) and self.state is ConnectionState.CONNECTED:
            self.shut_down(
                CloseCode.POLICY_VIOLATION,
                f"inbox overflow: more than {self._inbox.limit} messages unread",
            )

    def deliver(self, data: str | bytes) -> bool:
        """Take a message straight from an in-process client, as the reader would take it from
        ASGI receive(); ``False`` once the connection's scope is cancelled, which stops the
        reader (the client then goes through receive(), where what comes after the end is
        handled).

        The direct path of :class:`~trioweb.testing.TestClient`: it spares each message the
        wake-up of the reader task.
        """
        scope = self._scope
        if scope is None or scope.cancel_called:
            return False
        silence, idle = self._silence, self.idle_timeout
        if silence is not None and idle is not None:
            silence.deadline = trio.current_time() + idle
        self._take(data)
        return True

    async def drain_until_disconnect(self) -> None:
        """After our close, read until the client's answer so hypercorn's queue never fills."""
        while not self.disconnected:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True

    # -- the runtime --------------------------------------------------------------------

    async def _run_handler(self, app: App, ws: WebSocket, route: Route) -> Any:
        """Run the hooks and the handler; return what answered the handshake, if anything.

        As in Quart, a hook or handler may return a response (or anything a handler of an HTTP
        route may return) instead of accepting: it becomes the denial.
        """
        for hook in app._before_websocket:
            returned = await hook(ws)
            if returned is not None and self.state is ConnectionState.CONNECTING:
                return returned
            if self.state is ConnectionState.CLOSED:
                return None
        kwargs = dict(ws.path_params)
        if route.nursery_param is None:
            return await route.handler(ws, **kwargs)
        async with trio.open_nursery() as user_nursery:
            self._user_scope = user_nursery.cancel_scope
            kwargs[route.nursery_param] = ConnectionNursery(user_nursery)
            returned = await route.handler(ws, **kwargs)
            self.handler_returned()
        return returned

    async def _finish(
        self, app: App, ws: WebSocket, failure: BaseException | None, returned: Any = None
    ) -> None:
        """Apply the close table to how the connection's scope ended."""
        errors, controls = sort_failure(failure, (WebSocketClose, HTTPException))
        denial: Response | None = None
        unhandled: list[Exception] = []
        for error in [*errors, *controls]:
            if isinstance(error, WebSocketClose):
                continue
            handled, response = await _call_errorhandler(app, ws, error)
            if handled:
                denial = denial or response
            elif error in errors:
                unhandled.append(error)
        for error in unhandled:
            logger.error("unhandled error in WebSocket handler for %s", ws.path, exc_info=error)

        if self.state is ConnectionState.CLOSED:
            return
        if self.state is ConnectionState.CONNECTING:
            if denial is None and returned is not None and not errors and not controls:
                denial = _returned_response(returned, ws.path)
            if denial is not None:
                await self.deny(denial.status_code, denial.body, denial.headers.raw)
            elif errors:
                await self.deny(500, b"Internal Server Error", ())
            elif isinstance(http := _first(controls, HTTPException), HTTPException):
                await self.deny(http.status_code, http.detail.encode(), _raw(http.headers))
            elif self.server_close is not None and self.server_close[0] == SHUTDOWN_CLOSE[0]:
                await self.deny(503, b"server shutting down", ())
            else:
                await self.close(CloseCode.NORMAL, "")  # a close before accept: HTTP 403
            return
        if errors or controls or self.server_close is None:
            await self.close(*close_for(errors, controls))
        else:
            await self.close(*self.server_close)


def close_for(errors: list[Exception], controls: list[Exception]) -> tuple[int, str]:
    """The close code and reason the close table gives for how a scope ended."""
    if errors:
        return CloseCode.INTERNAL_ERROR, "internal error"
    if isinstance(close := _first(controls, WebSocketClose), WebSocketClose):
        return close.code, close.reason
    if isinstance(http := _first(controls, HTTPException), HTTPException):
        return CloseCode.POLICY_VIOLATION, http.detail
    return CloseCode.NORMAL, ""


def _returned_response(returned: Any, path: str) -> Response:
    """The denial a handler returned instead of accepting (a 500 if it is no response)."""
    from .http import PlainTextResponse, make_response

    try:
        return make_response(returned)
    except TypeError as exc:
        logger.error("WebSocket handler for %s returned an unusable value", path, exc_info=exc)
        return PlainTextResponse("Internal Server Error", 500)


def _first(items: list[Exception], kind: type[Exception]) -> Exception | None:
    return next((item for item in items if isinstance(item, kind)), None)


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _call_errorhandler(
    app: App, target: Any, error: Exception
) -> tuple[bool, Response | None]:
    """Run the app's error handler for ``error``, if any: (handled, the response it gave)."""
    handler = app._find_errorhandler(error)
    if handler is None:
        return False, None
    try:
        result = await handler(target, error)
    except Exception:
        logger.exception("error handler %r failed while handling %r", handler, error)
        return False, None
    from .http import make_response

    return True, None if result is None else make_response(result)


async def _run_after_hooks(app: App, ws: WebSocket) -> None:
    if not app._after_websocket:
        return
    with trio.move_on_after(app.after_hook_timeout) as scope:
        for hook in app._after_websocket:
            try:
                await hook(ws)
            except Exception:
                logger.exception("after_websocket hook %r failed for %s", hook, ws.path)
    if scope.cancelled_caught:
        logger.warning(
            "after_websocket hooks for %s ran past %.1f s and were cancelled",
            ws.path,
            app.after_hook_timeout,
        )


class ConnectionRegistry:
    """The app's live connections, so that a graceful shutdown can close every one of them."""

    def __init__(self) -> None:
        self._live: set[Connection] = set()
        self._per_route: dict[Route, int] = {}
        #: True from the start of a shutdown: new handshakes are refused with 503.
        self.draining = False
        self._empty = trio.Event()

    def __len__(self) -> int:
        return len(self._live)

    def full(self, route: Route, app_limit: int | None, route_limit: int | None) -> bool:
        """Whether one more connection would go over the app's or the route's limit."""
        if app_limit is not None and len(self._live) >= app_limit:
            return True
        return route_limit is not None and self._per_route.get(route, 0) >= route_limit

    def add(self, connection: Connection, route: Route) -> None:
        """Track ``connection``; shut it down at once if the app is already draining."""
        self._live.add(connection)
        self._per_route[route] = self._per_route.get(route, 0) + 1
        if self._empty.is_set():
            self._empty = trio.Event()
        if self.draining:
            connection.shut_down(*SHUTDOWN_CLOSE)

    def discard(self, connection: Connection, route: Route) -> None:
        """Forget ``connection``: its close is sent and its after hooks have run."""
        if connection in self._live:
            self._live.discard(connection)
            remaining = self._per_route[route] - 1
            if remaining:
                self._per_route[route] = remaining
            else:
                del self._per_route[route]
        if not self._live:
            self._empty.set()

    def reset(self) -> None:
        """Start a new serving life (a new lifespan): accept handshakes again."""
        self.draining = False
        self._empty = trio.Event()

    async def shut_down_all(self, grace: float) -> None:
        """Close every connection with 1001; wait up to ``grace`` seconds for all to finish."""
        self.draining = True
        for connection in list(self._live):
            connection.shut_down(*SHUTDOWN_CLOSE)
        if not self._live:
            return
        with trio.move_on_after(grace):
            await self._empty.wait()
        if self._live:
            logger.warning(
                "%d WebSocket connection(s) still open %.1f s after shutdown began",
                len(self._live),
                grace,
            )


def _oversize(data: str | bytes, limit: int) -> int:
    """The size in bytes of ``data`` if it is over ``limit``, else 0 (cheap for most text)."""
    if isinstance(data, bytes):
        return len(data) if len(data) > limit else 0
    if len(data) * 4 <= limit:  # UTF-8 takes at most 4 bytes a character
        return 0
    size = len(data.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


def _compression(app: App, route: Route | None) -> Compression | None:
    """The route's compression: its own (None is "off") or, if it says nothing, the app's."""
    value = ... if route is None else route.options.get("compression", ...)
    return app.compression if value is ... else value


def _setting(app: App, route: Route | None, name: str) -> Any:
    """A per-route setting, or the app's when the route has none."""
    value = route.options.get(name) if route is not None else None
    return getattr(app, name) if value is None else value


async def asgi_entry(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI 3 entry point (it is ``App.__call__``).

    A WebSocket scope is served right here: routed, checked against the limits, its hooks and
    handler run in the connection's nursery, closed as the outcome says. Other scopes go to
    the app.

    The runtime is the entry point itself rather than a coroutine it awaits, and admission is
    decided in a plain function: this frame lives as long as the socket and sits under every
    step of its handler, so it is the only one, and it keeps no more than it needs (not the
    connect message, the route match or the origin). Each frame less is some 250 bytes a
    socket, and a shorter path on every message.
    """
    kind = scope["type"]
    if kind != "websocket":
        if kind == "http":
            return await app._handle_http(scope, receive, send)
        if kind == "lifespan":
            return await app._handle_lifespan(scope, receive, send)
        raise ValueError(f"trioweb cannot serve ASGI scope type {kind!r}")
    if (await receive())["type"] != "websocket.connect":
        return  # the client left before the handshake reached us
    connection, ws, route = _admit(app, scope, receive, send)
    if isinstance(route, tuple):
        await connection.deny(route[0], route[1], ())
        return
    # (Few locals: this frame lives as long as the socket, and each costs 8 bytes a socket.)
    failure: BaseException | None = None
    returned: Any = None
    try:
        try:
            async with trio.open_nursery() as nursery:
                connection._scope = nursery.cancel_scope
                app._connections.add(connection, route)
                nursery.start_soon(connection.read_loop, name=_READER_NAME)
                direct = (scope.get("extensions") or {}).get(DIRECT_DELIVERY)
                # Only when receive() is the client's own: a middleware that wraps it must see
                # every message, as it does behind a server.
                if direct is not None and direct.get("receive") is receive:
                    direct["attach"](connection.deliver)
                if app._before_websocket or route.nursery_param is not None:
                    returned = await connection._run_handler(app, ws, route)
                else:  # the common case, without a frame in between
                    returned = await route.handler(ws, **ws.path_params)
                if not nursery.cancel_scope.cancel_called:  # (a disconnect already did)
                    nursery.cancel_scope.cancel()  # only the reader is left
        except BaseException as exc:  # sorted out right below
            failure = exc
        try:
            await connection._finish(app, ws, failure, returned)
        finally:
            # Shielded: even when the server cancels us (its graceful timeout), cleanup such
            # as presence removal runs, under the hooks' own time limit.
            if app._after_websocket:
                with trio.CancelScope(shield=True):
                    await _run_after_hooks(app, ws)
    finally:
        app._connections.discard(connection, route)
    if connection.close_sent and not connection.disconnected and connection.close_code is not None:
        await connection.drain_until_disconnect()


def _admit(
    app: App, scope: Scope, receive: Receive, send: Send
) -> tuple[Connection, WebSocket, Route | tuple[int, bytes]]:
    """Route a handshake and check it against the limits: its route, or the denial it gets
    (status and body)."""
    from .websocket import WebSocket

    found = app.router.match_websocket(scope.get("path", "/"))
    route = found.route
    connection = Connection(
        scope,
        receive,
        send,
        inbox_size=_setting(app, route, "inbox_size"),
        max_message_size=_setting(app, route, "max_message_size"),
        idle_timeout=_setting(app, route, "idle_timeout"),
        compression=_compression(app, route),
        close_timeout=app.close_timeout,
    )
    ws = WebSocket(connection, scope, app, found.params)
    if route is None:
        return connection, ws, (404, f"no WebSocket route for {ws.path}".encode())
    registry = app._connections
    if registry.draining:
        return connection, ws, (503, b"server shutting down")
    origin_policy: OriginPolicy = _setting(app, route, "origin_policy")
    # The two headers straight from the scope: ws.headers would keep a decoded copy of them all
    # for the socket's whole life (about a kilobyte), whether the app reads them or not.
    origin = _first_header(scope, b"origin")
    if not origin_policy.allows(origin, _first_header(scope, b"host")):
        return connection, ws, (403, f"origin not allowed: {origin}".encode())
    if registry.full(route, app.max_connections, route.options.get("max_connections")):
        return connection, ws, (503, b"too many connections, try again later")
    return connection, ws, route


def _first_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as ``Headers.get`` would give it."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
