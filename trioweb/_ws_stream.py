"""trioweb's WebSocket stream for hypercorn: every socket ends cleanly and within bounds.

hypercorn 0.18's ``WSStream`` (``hypercorn/protocol/ws_stream.py``) turns wire events into ASGI
events. Probed with real and hostile clients, it breaks trioweb's promise in five ways
(docs/hypercorn.md, facts 15 to 19):

- Over ``websocket_max_message_size`` it sends Close 1009 and stops reading wsproto's lazy event
  generator, so the client's Close reply is never processed: TCP stays open, the app is never
  told. Its message buffer appends before it checks and is not cleared on that path.
- It negotiates permessage-deflate with context takeover for every client that offers it, and
  wsproto inflates every read without a limit (a deflate bomb).
- Every close the client starts reaches the app as 1006, and the reason is dropped.
- A protocol error (wsproto reports it as a ``CloseConnection`` event without a state change)
  drops TCP with no Close frame.

:class:`WebSocketStream` subclasses hypercorn's stream and replaces the wire half of it; the
handshake and the ASGI half (``Request``, denials, ``app_send``) stay hypercorn's. Its phases
are wsproto's :class:`~wsproto.connection.ConnectionState`; the table below is the whole of it
("told" means the app has had its ``websocket.disconnect``, which happens exactly once):

==============  ==========================================  ===========================  =========
phase           event                                       what the stream does         next
==============  ==========================================  ===========================  =========
OPEN            a message within the limit                  buffer it; at its end, to    OPEN
                                                            the app
OPEN            a message over the limit (counted after     Close 1009; app told 1009;   LOCAL_
                inflation, as it grows)                     start the close timer        CLOSING
OPEN            the client's Close (code, reason)           echo it; app told (code,     CLOSED
                                                            reason); close TCP
OPEN            a protocol error, invalid UTF-8, a          Close 1002/1007; app told;   CLOSED
                corrupt deflate stream                      close TCP
OPEN            the app's ``websocket.close``               start the close timer; Close LOCAL_
                                                                                         CLOSING
LOCAL_CLOSING   a message                                   drop it                      LOCAL_
                                                                                         CLOSING
LOCAL_CLOSING   the app finishes                            nothing (TCP stays open for  LOCAL_
                                                            the client's Close)          CLOSING
LOCAL_CLOSING   the client's Close                          close TCP; app told unless   CLOSED
                                                            it was
LOCAL_CLOSING   a protocol error, or the close timer fires  close TCP; app told 1006     CLOSED
                                                            unless it was
any             TCP lost                                    app told 1006 unless it was  CLOSED
==============  ==========================================  ===========================  =========

The close timer also ends a socket whose peer stopped reading: closing the TCP stream aborts a
send stalled on it, which ASGI alone has no way to do.

The app's settings arrive with its ``websocket.accept`` under the key :data:`WIRE_SETTINGS`: a dict
with ``max_message_size`` (bytes, counted after inflation), ``compression`` (a
:class:`~trioweb.Compression`, or None for none), ``close_timeout`` (seconds) and, for an accept
that only carries a denial's close (``browser_denials="close"``), ``denied``: the HTTP status
the access log shows for it instead of 101. Apps that do not send it get hypercorn's
``websocket_max_message_size``, the default compression and a 5 s close timeout. Other servers
ignore the key.

:func:`~trioweb._ws_install.install` puts the stream in place of hypercorn's; the
upstream write-up is docs/hypercorn.md and ``patches/hypercorn-ws-stream.patch``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from time import time
from typing import Any

from hypercorn.protocol.events import Data, EndData, Request, Response, StreamClosed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.typing import WebsocketAcceptEvent
from trio.lowlevel import in_trio_run
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from ._deflate import Compression, DeflateExtension
from ._keepalive import Deadline, schedule
from ._types import (
    CLOSED_BY_SERVER,
    DEFAULT_CLOSE_TIMEOUT,
    DIRECT_DELIVERY,
    WIRE_SETTINGS,
    DirectPeer,
)
from ._ws_buffer import MessageBuffer
from ._ws_handshake import OfferDirectDelivery, accept_handshake, short_reason

__all__ = ["WebSocketStream"]

logger = logging.getLogger(__name__)


#: What the stream negotiates for an app that does not say (hypercorn's own app, say).
DEFAULT_COMPRESSION = Compression()

_ABNORMAL = int(CloseReason.ABNORMAL_CLOSURE)
# Read on every message: module globals are faster to reach than enum members.
_CONNECTED = ASGIWebsocketState.CONNECTED
_OPEN = ConnectionState.OPEN
_TOO_BIG = int(CloseReason.MESSAGE_TOO_BIG)


class WebSocketStream(WSStream):
    """hypercorn's ``WSStream`` with a wire half that always ends the socket cleanly."""

    # In place of hypercorn's WebsocketBuffer, not beside it: one buffer per socket.
    buffer: MessageBuffer  # type: ignore[assignment]
    app_put: Callable[[dict[str, Any]], Awaitable[None]] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = MessageBuffer(self.config.websocket_max_message_size)
        #: (code, reason) for the app's ``websocket.disconnect``, once the wire knows it.
        self.close_reason: tuple[int, str] | None = None
        #: The app has had its ``websocket.disconnect``.
        self.told = False
        #: The close is the stream's own (1009, a protocol error), not the client's.
        self.closed_here = False
        self._deflate: DeflateExtension | None = None
        self._close_timeout = DEFAULT_CLOSE_TIMEOUT
        self._close_timer: Any = None  # a hypercorn SingleTask while a close is pending
        #: Something came from the client since the last keepalive deadline (see keepalive()).
        self._heard = True
        #: A Ping went out and its interval is running.
        self._pinged = False
        #: The socket's place among the run's keepalive deadlines, while it pings.
        self._keepalive: Deadline | None = None
        #: A trioweb app's connection, once it took the direct way in (``DIRECT_DELIVERY``):
        #: messages and the end go to it, not through the app's ASGI queue.
        self._peer: DirectPeer | None = None

    # -- the ASGI side ---------------------------------------------------------------------

    async def handle(self, event: StreamEvent) -> None:
        """Handle an event from hypercorn's protocol; the end of the stream tells the app."""
        if type(event) is Data and not self.closed and self.handshake.accepted:
            # Bytes of an open socket, the event of every message in: what hypercorn's handle
            # does for them, without its walk through the other kinds of event.
            self._heard = True  # any bytes from the client: it is alive (see keepalive)
            self.connection.receive_data(event.data)
            await self._handle_events()
            return
        if isinstance(event, Request) and not self.closed:
            # The app is spawned in here, by hypercorn: it gets the offer of the direct way in
            # with its scope (the offer, not the stream, is what the spawned task keeps).
            app = self.app
            self.app = OfferDirectDelivery(app, self._attach_peer)  # type: ignore[assignment]
            try:
                await super().handle(event)
            finally:
                self.app = app
            return
        if isinstance(event, StreamClosed):
            keepalive, self._keepalive = self._keepalive, None
            if keepalive is not None:
                keepalive.cancel()
            if not self.closed:
                self.closed = True
                await self._stop_close_timer()
                await self._tell_app(*self._final_close())
            self._forget_peer()
            return
        self._heard = True  # any bytes from the client: it is alive (see keepalive)
        await super().handle(event)

    async def app_send(self, message: Any) -> None:
        """Handle an ASGI event from the app; after a close the stream made, sends are
        dropped until the app has read its disconnect."""
        if self.closed:
            return
        if (
            message is not None
            and message["type"] == "websocket.send"
            and self.state is _CONNECTED
            and self.connection.state is _OPEN
        ):
            # Every message out: what hypercorn's app_send does for it, without its walk
            # through the other kinds of event.
            data = message.get("bytes")
            if data is not None:
                await self._send_wsproto_event(BytesMessage(data=bytes(data)))
                return
            text = message["text"]
            if not isinstance(text, str):
                raise TypeError(f"{text} should be a str")
            await self._send_wsproto_event(TextMessage(data=text))
            return
        if message is None and self._closing_handshake_pending():
            # The app is done (hypercorn's stream would close TCP now), but our Close is out
            # and the client's answer, or the close timer, ends the socket: closing TCP under a
            # reply in flight resets it, and the client may lose the Close frame. Nothing is
            # told to the app from here on.
            self.app_put = None
            self._forget_peer()
            return
        if (
            message is not None
            and message["type"] in {"websocket.send", "websocket.close"}
            and self.state == ASGIWebsocketState.CONNECTED
            and self.connection.state is not ConnectionState.OPEN
        ):
            if message["type"] == "websocket.close":
                self.state = ASGIWebsocketState.CLOSED
            return  # the stream closed it already (1009, a protocol error, the client's Close)
        if (
            message is not None
            and message["type"] == "websocket.close"
            and self.state == ASGIWebsocketState.CONNECTED
        ):
            # Timer first: our Close may wait behind a send stalled on a peer that stopped
            # reading, and the timer is what ends that.
            await self._start_close_timer()
        await super().app_send(message)

    def _attach_peer(self, peer: DirectPeer) -> bool:
        """The app takes the direct way in: from now on its messages and its end go to
        ``peer``. Refused (False) if the end already went through its ASGI queue."""
        self._forget_peer()  # the offer is taken: the scope need not lead back to the stream
        if self.told or self.closed:
            return False
        self._peer = peer
        return True

    def _forget_peer(self) -> None:
        """Drop the references between the app's side and the stream (no cycle outlives it)."""
        self._peer = None
        extensions = getattr(self, "scope", {}).get("extensions")
        if extensions:
            extensions.pop(DIRECT_DELIVERY, None)

    def _closing_handshake_pending(self) -> bool:
        """Our Close is out (the close timer runs) and the client's has not come yet."""
        return (
            self.state in {ASGIWebsocketState.CONNECTED, ASGIWebsocketState.CLOSED}
            and self.connection.state is ConnectionState.LOCAL_CLOSING
        )

    async def _accept(self, message: WebsocketAcceptEvent) -> None:
        settings: dict[str, Any] = message.get(WIRE_SETTINGS) or {}  # type: ignore[assignment]
        limit = settings.get("max_message_size")
        if limit is not None:
            self.buffer.limit = limit
        self._close_timeout = settings.get("close_timeout", DEFAULT_CLOSE_TIMEOUT)
        compression = settings.get("compression", DEFAULT_COMPRESSION)
        self.state = ASGIWebsocketState.CONNECTED
        status_code, headers, self.connection, self._deflate = accept_handshake(
            self.handshake, message.get("subprotocol"), message.get("headers", []), compression
        )
        if self._deflate is not None:
            self._deflate.max_message_size = self.buffer.limit
        await self.send(
            Response(stream_id=self.stream_id, status_code=status_code, headers=headers)
        )
        # An accept that only carries a denial's close (browser_denials="close") is logged with
        # the denial's status, as an HTTP denial would be: the request was refused.
        logged = settings.get("denied", status_code)
        await self.config.log.access(
            self.scope, {"status": logged, "headers": []}, time() - self.start_time
        )
        interval = self.config.websocket_ping_interval
        if interval is not None and not self.closed:
            if in_trio_run():
                self._keepalive = schedule(self, interval)  # no task per socket: a deadline
            else:  # another worker (hypercorn's asyncio): hypercorn's own pings, unchecked
                self.task_group.spawn(super()._send_pings)

    # -- the wire side ---------------------------------------------------------------------

    def keepalive(self) -> float | None:
        """A keepalive deadline (``_keepalive.py``), every ``websocket_ping_interval`` from the
        accept: a Ping, and the end of a peer that answers nothing. If a whole interval after a
        Ping brought not a byte from it (no Pong, no message), the stream is closed and the app
        told 1006; so a peer that vanished without a FIN is dropped within two intervals of its
        last byte. (hypercorn pings at once and never checks Pongs; its read timeout would, but
        for every connection, HTTP uploads included.) What goes out is sent from a task of the
        connection's own, so that a peer that stopped reading stalls no one else."""
        if self.closed:
            return None
        if self._pinged and not self._heard:
            logger.info(
                "closing a WebSocket whose peer answered no ping in %g s",
                self.config.websocket_ping_interval,
            )
            self._start(self._end_stream)
            return None
        self._heard = False
        self._pinged = True
        self._start(self._ping)
        return self.config.websocket_ping_interval

    def _start(self, action: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(RuntimeError):  # the connection is closing: so is the stream
            self.task_group.spawn(action)

    async def _ping(self) -> None:
        if not self.closed and self.connection.state is _OPEN:
            await self._send_wsproto_event(Ping())

    async def _end_stream(self) -> None:
        if not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    async def _handle_events(self) -> None:
        connection = self.connection
        for event in connection.events():
            if isinstance(event, Message):
                if connection.state is not ConnectionState.OPEN:
                    continue  # a message after our Close: dropped, as RFC 6455 (1.4) allows
                deflate = self._deflate
                if not self.buffer.add(event.data) or (deflate is not None and deflate.overflowed):
                    await self._close_too_big()
                elif not event.message_finished:
                    pass
                elif self._peer is not None:
                    # Straight into the app's inbox, no task switch: False means the app has
                    # stopped reading (its socket is ending) and the message is not wanted.
                    self._peer.deliver(self.buffer.take_data())
                elif self.app_put is not None:
                    await self.app_put(self.buffer.take())
            elif isinstance(event, Ping):
                if connection.state is ConnectionState.OPEN:
                    await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                await self._closed_by_wire(event)
                return

    async def _closed_by_wire(self, event: CloseConnection) -> None:
        """The client's Close arrived, or wsproto found a protocol error (a CloseConnection
        event with no change of state): answer as RFC 6455 says, then close TCP."""
        state = self.connection.state
        code, reason = int(event.code), event.reason or ""
        if state is ConnectionState.REMOTE_CLOSING:  # the client closed first
            self.close_reason = (code, reason)
            await self._send_wsproto_event(event.response())
        elif state is ConnectionState.CLOSED:  # the client's answer to our Close
            if self.close_reason is None:
                self.close_reason = (code, reason)
        elif state is ConnectionState.OPEN:  # a protocol error: fail the connection
            logger.info("closing a WebSocket with %d: %s", code, reason)
            self.close_reason = (code, reason)
            self.closed_here = True
            await self._send_wsproto_event(CloseConnection(code=code, reason=short_reason(reason)))
        # else LOCAL_CLOSING and a protocol error: our Close is out, nothing more to say.
        await self.send(StreamClosed(stream_id=self.stream_id))

    async def _close_too_big(self) -> None:
        limit = self.buffer.limit
        reason = f"message over the limit of {limit} bytes"
        self.close_reason = (_TOO_BIG, reason)
        await self._start_close_timer()
        await self._send_wsproto_event(CloseConnection(code=_TOO_BIG, reason=reason))
        await self.send(EndData(stream_id=self.stream_id))
        # The app learns now, so its handler is cancelled at once, not after the handshake.
        self.closed_here = True
        await self._tell_app(_TOO_BIG, reason)

    def _final_close(self) -> tuple[int, str]:
        if self.close_reason is not None:
            return self.close_reason
        if self.state == ASGIWebsocketState.HTTPCLOSED:
            return 1000, ""  # the handshake was answered with HTTP: no close code applies
        return _ABNORMAL, ""  # no Close frame came: RFC 6455, 7.1.5

    async def _tell_app(self, code: int, reason: str) -> None:
        if self.told:
            return
        peer = self._peer
        if peer is not None:
            self.told = True
            self._peer = None
            peer.disconnected(code, reason, self.closed_here)
        elif self.app_put is not None:
            self.told = True
            message = {"type": "websocket.disconnect", "code": code, "reason": reason}
            if self.closed_here:
                message[CLOSED_BY_SERVER] = True
            await self.app_put(message)

    # -- the close timer -------------------------------------------------------------------

    async def _start_close_timer(self) -> None:
        if self._close_timer is None:
            self._close_timer = self.context.single_task_class()
            await self._close_timer.restart(self.task_group, self._close_expired)

    async def _stop_close_timer(self) -> None:
        timer, self._close_timer = self._close_timer, None
        if timer is not None:
            await timer.stop()

    async def _close_expired(self) -> None:
        await self.context.sleep(self._close_timeout)
        self._close_timer = None  # it is this task: closing must not cancel it
        if not self.closed:
            logger.info("no Close from the client within %g s; closing TCP", self._close_timeout)
            await self.send(StreamClosed(stream_id=self.stream_id))
