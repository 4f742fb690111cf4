"""The runtime of one socket: its phase, its sends, the way its messages come in, and nothing
above it.

A :class:`Connection` is what a :class:`~trioweb.WebSocket` stands on. It knows ASGI and trio,
and no part of trioweb above it: not the app, not routes, not hooks (``_session.py`` runs those,
and decides how the socket closes). Everything a socket runs lives in one cancel scope, the
session's; the connection is handed it and cancels it when the socket ends::

    connection scope (the session's)
    ├── before_websocket hooks, then the handler (in the scope's own body)
    ├── with a server that hands messages over directly (trioweb's stream): nothing else;
    │   the stream calls deliver() for each message and disconnected() at the end, from its
    │   own task, so a message costs no task switch but the handler's own wake-up
    ├── otherwise, in a nursery, the reader task (``_reader.py``): the only caller of ASGI
    │   receive(); drains it into the inbox, and reports websocket.disconnect
    └── the handler's nursery, only if it asked for one: the tasks it starts

Why nothing may ever wait between the wire and the inbox: hypercorn stops reading the TCP
stream while its queue toward the app is full (10 events, docs/hypercorn.md fact 4), so a
paused reader would also stall pong replies and the very disconnect that should end the
connection. Both ways in put a message in the inbox at once, and a full inbox closes the
socket with 1008 instead of blocking. (The direct way is taken only when the app was given the
server's own receive: a middleware that wraps it must see every message.) The test client
hands messages and the end over directly too. The socket's phase is a ``_phases.Phase``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, current_task

from ._buffer import Buffer
from ._deflate import Compression
from ._denial import Denial, denial
from ._failures import PROTOCOL_ERRORS
from ._phases import Event, Phase, advance
from ._send_lock import SendLock
from ._sizes import size_of
from ._types import (
    DEFAULT_CLOSE_TIMEOUT,
    DIRECT_DELIVERY,
    SENT,
    WIRE_SETTINGS,
    Message,
    Receive,
    Scope,
    Send,
)
from ._yields import yields_so_far
from .close_codes import CloseCode, as_close_code, check_close_code
from .exceptions import WebSocketDisconnect, truncate_reason

__all__ = ["SHUTDOWN_CLOSE", "Connection"]

logger = logging.getLogger("trioweb")

# Phases read on every message: a module global is faster to reach than an enum member.
_CONNECTED = Phase.CONNECTED

SHUTDOWN_CLOSE = (CloseCode.GOING_AWAY, "server shutting down")


class Connection:
    """The runtime state of one socket. Users hold a :class:`~trioweb.WebSocket` instead."""

    __slots__ = (
        "_ended",
        "_handler_done",
        "_receive",
        "_send",
        "_send_lock",
        "accepted",
        "bytes_in",
        "bytes_out",
        "cancel_scope",
        "cancelled",
        "close_code",
        "close_reason",
        "close_timeout",
        "closed_by_server",
        "compression",
        "denial_status",
        "denial_subprotocol",
        "denials_by_close",
        "direct_end",
        "idle_timeout",
        "inbox",
        "max_message_size",
        "messages_in",
        "messages_out",
        "opened_at",
        "phase",
        "server_close",
        "silence",
        "subprotocol",
        "supports_denial",
        "user_scope",
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
        self._send = send
        self._send_lock = SendLock()
        #: Messages larger than this many bytes close the socket with 1009.
        self.max_message_size = max_message_size
        #: Seconds without a message from the client before the socket is closed with 1000.
        self.idle_timeout = idle_timeout
        #: permessage-deflate for this socket, if the client offers it (None: off).
        self.compression = compression
        #: Seconds the server waits for the client's Close after sending its own.
        self.close_timeout = close_timeout
        #: Messages received and not read yet; ``ws.receive()`` reads it directly.
        self.inbox: Buffer[str | bytes] = Buffer(inbox_size)
        #: Where the socket is in its life.
        self.phase = Phase.CONNECTING
        #: The accept has gone out: from now on a close is a close frame, not an HTTP 403.
        self.accepted = False
        #: The socket's scope: cancelled (by :meth:`cancel`) when the socket ends.
        self.cancel_scope: trio.CancelScope | None = None
        self.cancelled = False  #: :meth:`cancel` has cancelled it
        #: The scope of the handler's own nursery, if it asked for one.
        self.user_scope: trio.CancelScope | None = None
        self._handler_done = False
        #: The idle timeout's scope, while the reader or the watcher runs with one: every
        #: message pushes its deadline back (``_reader.py``).
        self.silence: trio.CancelScope | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        #: A close the server decided on its own (inbox overflow, shutdown), still to be sent.
        self.server_close: tuple[int, str] | None = None
        self.supports_denial = "websocket.http.response" in (scope.get("extensions") or {})
        #: A 4xx denial is an accept and a close ``4000 + status`` (a browser's handshake on a
        #: route with ``browser_denials="close"``), not an HTTP response.
        self.denials_by_close = False
        #: The subprotocol such a denial accepts with: the client's first offer, if it made any
        #: (a browser drops a socket accepted without one of the subprotocols it offered).
        self.denial_subprotocol: str | None = None
        #: The HTTP status the handshake was refused with, however it reached the client.
        self.denial_status: int | None = None
        #: For the session line: the handshake's time (trio's clock), messages and bytes each way.
        self.opened_at = trio.current_time()
        self.closed_by_server = False  #: the server's wire closed on its own (1009, 1002...)
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0
        #: The server reports the end by :meth:`disconnected`, not through ASGI receive().
        self.direct_end = False
        #: Set by the end, while :meth:`drain_until_disconnect` waits for it (direct_end only).
        self._ended: trio.Event | None = None

    def attach(self, scope: Scope, receive: Receive) -> bool:
        """Take the server's direct way in (``_types.DIRECT_DELIVERY``) if it offers one for
        this very ``receive``; True if it reports the end that way too, so that no reader task
        is needed."""
        direct = (scope.get("extensions") or {}).get(DIRECT_DELIVERY)
        # Only when receive() is the server's own: a middleware that wraps it must see every
        # message, as it does behind any other server.
        if direct is None or direct.get("receive") is not receive:
            return False
        self.direct_end = bool(direct["attach"](self))
        return self.direct_end

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
        lock = self._send_lock
        points = await lock.acquire_for_send()
        try:
            if self.phase is not Phase.CONNECTING:
                if implicit and self.phase is Phase.CONNECTED:
                    return
                if self.phase.closed:
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
            self.accepted = True
            self.subprotocol = subprotocol
            # A close (the app's, or the client's disconnect) may have come while the accept
            # was being sent: it stands (the table keeps a closed phase).
            self.phase = advance(self.phase, Event.ACCEPTED)
        finally:
            await lock.release_after_send(points)

    async def deny(self, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Refuse the handshake (see :mod:`._denial` for how the client is told)."""
        refusal = self._refusal(status, body, headers)
        # Decided under the lock: an accept on its way out (from another task) comes first.
        lock = self._send_lock
        await lock.acquire()
        try:
            if self.accepted or self.phase is not Phase.CONNECTING:
                raise RuntimeError(
                    "reject() called on a WebSocket that is already closed"
                    if self.phase.closed
                    else "reject() is only possible before accept(); after it, use close()"
                )
            self._mark_closed_by_app(None, None)
            with trio.CancelScope(shield=True):
                await self._send_refusal(refusal)
        finally:
            lock.release()

    def _refusal(self, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]) -> Denial:
        return denial(
            status,
            body,
            headers,
            supports_denial=self.supports_denial,
            by_close=self.denials_by_close,
            subprotocol=self.denial_subprotocol,
            close_timeout=self.close_timeout,
        )

    async def _send_refusal(self, refusal: Denial) -> None:
        """Send a denial's messages; called holding the send lock, shielded, once the socket is
        marked closed by the app."""
        self.denial_status = refusal.status
        if refusal.by_close:
            self.close_code, self.close_reason = refusal.close_code, refusal.close_reason
        for message in refusal.messages:
            await self._server_send(message)
            if message["type"] == "websocket.accept":
                self.accepted = True
                self.subprotocol = refusal.subprotocol

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
        if not self.phase.closed:
            self.close_code = CloseCode.ABNORMAL_CLOSURE
            self.close_reason = ""
        self.phase = advance(self.phase, Event.DISCONNECTED)  # nothing more from this peer
        self.inbox.close()
        self.cancel()

    def disconnect_error(self) -> WebSocketDisconnect:
        """The exception that send and receive raise on a closed socket."""
        return WebSocketDisconnect(
            self.close_code if self.close_code is not None else CloseCode.ABNORMAL_CLOSURE,
            self.close_reason or "",
        )

    async def send(self, message: Message) -> None:
        """Send one ASGI message: a checkpoint, whose schedule point is the wait for the lock or
        the server's own send if either yields, else a yield at the end (``_send_lock.py``)."""
        # The lock (its fast path inline: plain calls) is taken for a send that may yield, before
        # it starts; one the server takes without a yield (SENT) needs none: nothing else runs.
        await checkpoint_if_cancelled()
        lock = self._send_lock
        if waited := lock.held:
            await lock.wait()  # handed over: this send holds it
        held, task, points = waited, None, None
        try:
            if self.phase is not _CONNECTED:
                raise self.disconnect_error()
            sent = self._send(message)
            if sent is not SENT:  # (SENT, the test client's: no yield, nothing to count)
                held = held or lock.try_acquire()  # free: nothing has yielded since it was
                task = current_task()
                points = yields_so_far(task)
                await sent
            self.messages_out += 1  # counted for the session line, with the size:
            text = message.get("text")  # (ASCII text, most messages: its length)
            if text is not None and text.isascii():
                self.bytes_out += len(text)
            else:
                self.bytes_out += size_of(text if text is not None else message.get("bytes") or b"")
        except PROTOCOL_ERRORS as exc:
            raise self._send_failed(message, exc) from None
        finally:
            if held:
                lock.release()
            if not waited and (task is None or yields_so_far(task) == points):
                await cancel_shielded_checkpoint()

    # -- closing ------------------------------------------------------------------------

    def _mark_closed_by_app(self, code: int | None, reason: str | None) -> None:
        self.phase = advance(self.phase, Event.APP_CLOSED)
        self.close_code = code
        self.close_reason = reason
        self.inbox.close()
        if self._handler_done and self.user_scope is not None:
            # The handler has returned and the socket is closed: nothing may outlive it.
            self.user_scope.cancel()

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (HTTP 403 before accept); ``RuntimeError`` if already closed."""
        code = check_close_code(code)
        reason = truncate_reason(reason)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.phase.closed:
            how = (
                "by the app"
                if self.phase in (Phase.CLOSED_BY_APP, Phase.DONE)
                else f"by the client (code {self.close_code})"
            )
            raise RuntimeError(f"close() called on a WebSocket already closed {how}")
        # Mark first: every other task's send or receive fails from this instant on. Shielded,
        # because a socket marked closed whose close never went out gets 1011 from hypercorn.
        self._mark_closed_by_app(code, reason)
        lock = self._send_lock
        with trio.CancelScope(shield=True):
            await lock.acquire()
            try:
                if not self.accepted and self.denials_by_close:
                    # The HTTP 403 below, in a form a browser's page can read: 4403.
                    await self._send_refusal(self._refusal(403, reason.encode(), ()))
                    return
                if not self.accepted:
                    self.denial_status = 403
                    # No accept went out (none is on its way: we hold the lock): this close
                    # answers the handshake with HTTP 403, and is no close code.
                    self.close_code = self.close_reason = None
                await self._server_send({"type": "websocket.close", "code": code, "reason": reason})
            finally:
                lock.release()

    def handler_returned(self) -> None:
        """The handler is done: if the socket is closed, cancel the tasks it left behind."""
        self._handler_done = True
        if self.phase.closed and self.user_scope is not None:
            self.user_scope.cancel()

    def shut_down(self, code: int, reason: str) -> None:
        """Decide to close from the server's side: cancel everything; the close follows."""
        if self.server_close is None:
            self.server_close = (code, reason)
        self.cancel()

    def cancel(self) -> None:
        """Cancel the socket's scope, once; a message handed over from then on is not wanted
        (a flag of our own: trio's cancel_called reads the clock, on every message)."""
        scope = self.cancel_scope
        if scope is not None and not self.cancelled:
            self.cancelled = True
            scope.cancel()

    # -- the way in ---------------------------------------------------------------------

    def disconnected(self, code: int, reason: str, closed_by_server: bool) -> None:
        """The end of the socket, as the server reports it (its ``websocket.disconnect``)."""
        was_closed = self.phase.closed
        self.phase = advance(self.phase, Event.DISCONNECTED)
        ended = self._ended
        if ended is not None:
            ended.set()
        if was_closed:
            return  # the answer to our own close: it cancels nothing
        self.close_code = as_close_code(code)
        self.close_reason = reason
        self.closed_by_server = closed_by_server
        self.inbox.close()
        self.cancel()

    def deliver(self, data: str | bytes) -> bool:
        """One message from the client: into the inbox, or the close its size or an overflow
        calls for; ``False`` once the connection's scope is cancelled, the message unwanted
        (trioweb's stream and the test client drop it, as the drain after a close would).

        Called for every message in: by the server on the direct way in, by the reader task
        otherwise."""
        if self.cancelled or self.cancel_scope is None:
            return False
        silence, idle = self.silence, self.idle_timeout
        if silence is not None and idle is not None:
            silence.deadline = trio.current_time() + idle
        # Its size once, for the session's count and the limit (inline: any bytes-like, even
        # a memoryview, which has no isascii(), is its len(); ASCII text costs no encoding).
        size = len(data) if type(data) is not str or data.isascii() else size_of(data)
        self.messages_in += 1
        self.bytes_in += size
        limit = self.max_message_size
        if limit is not None and size > limit:
            self.shut_down(
                CloseCode.MESSAGE_TOO_BIG, f"message of {size} bytes over the limit of {limit}"
            )
        elif not self.inbox.put(data) and self.phase is _CONNECTED:
            self.shut_down(
                CloseCode.POLICY_VIOLATION,
                f"inbox overflow: more than {self.inbox.limit} messages unread",
            )
        return True

    async def drain_until_disconnect(self) -> None:
        """After our close, read until the client's answer so hypercorn's queue never fills
        (with ``direct_end``, only wait for it: the server bounds the wait by its close
        timeout)."""
        if self.direct_end:
            if not self.phase.disconnected:
                ended = self._ended = trio.Event()
                await ended.wait()
            return
        while not self.phase.disconnected:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.phase = advance(self.phase, Event.DISCONNECTED)
