"""The WebSocket object a handler holds: handshake data, send, receive, close."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from ._close_rules import close_for
from ._connection import Connection
from ._failures import classify
from ._json import JSON_ERRORS, json_text
from ._messages import Messages
from ._phases import Phase
from ._scope import ScopeView
from ._typed import DECODE_ERRORS, DEFAULT_POLICY, MessagePolicy, Reader, invalid_message
from ._types import Scope
from .close_codes import CloseCode
from .exceptions import (
    HTTPException,
    InvalidJSONMessage,
    InvalidMessage,
    UnexpectedMessageType,
    WebSocketClose,
    WebSocketDisconnect,
)

if TYPE_CHECKING:
    from .app import App

__all__ = ["WebSocket"]

JSONLoads = Callable[[str | bytes], Any]
JSONDumps = Callable[[Any], str]

# A module global: an enum member read from its class costs a lookup through the enum's
# metaclass, noticeable on a per-message path (see send_frame).
_CONNECTED = Phase.CONNECTED
_CONNECTING = Phase.CONNECTING


def _header_pairs(headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    if not headers:
        return []
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class WebSocket(ScopeView):
    """One WebSocket connection, as the handler sees it.

    Sending and receiving before :meth:`accept` accepts implicitly. Once the socket is closed
    (by the client or by the app), every ``send*`` and ``receive*`` raises
    :class:`~trioweb.WebSocketDisconnect`, and the ``async for`` forms simply end.
    """

    __slots__ = ("_conn", "_invalid", "_messages")

    def __init__(
        self,
        connection: Connection,
        scope: Scope,
        app: App | None = None,
        path_params: Mapping[str, Any] | None = None,
        messages: MessagePolicy | None = None,
    ) -> None:
        super().__init__(scope, app, path_params)
        self._conn = connection
        # The route's typed messages and error policy (shared by its sockets), and how many
        # invalid messages this socket has sent.
        self._messages = messages if messages is not None else DEFAULT_POLICY
        self._invalid = 0

    def __repr__(self) -> str:
        return f"<WebSocket {self.path} {self._conn.phase.value}>"

    # -- handshake data and state -------------------------------------------------------

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or [])

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen at accept, if any."""
        return self._conn.subprotocol

    @property
    def connecting(self) -> bool:
        """True until the handshake is accepted or refused."""
        return self._conn.phase is _CONNECTING

    @property
    def connected(self) -> bool:
        """True between accept and close."""
        return self._conn.phase is Phase.CONNECTED

    @property
    def closed(self) -> bool:
        """True once either side has closed (or the handshake was refused)."""
        return self._conn.phase.closed

    @property
    def close_code(self) -> int | None:
        """How the socket closed: the app's code, or the client's from its Close frame.

        1005 for a Close without a code, 1006 when no Close frame came (the network failed);
        1009, 1002 or 1007 when the server ended the socket over a limit or a protocol error.
        ``None`` while open, and for a handshake refused with an HTTP response; ``4000 +
        status`` for one refused with a close (``browser_denials="close"``). (Under plain
        hypercorn, without trioweb's stream, every close the client starts reads 1006.)
        """
        return self._conn.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason that goes with :attr:`close_code`."""
        return self._conn.close_reason

    @property
    def denial_status(self) -> int | None:
        """The HTTP status the handshake was refused with (401, 403...), or ``None`` if it was
        not refused.

        Set however the refusal reached the client: as an HTTP response, or, under
        ``browser_denials="close"``, as an accept and a close with code ``4000 + status``.
        ``close()`` or ``WebSocketClose`` before accept refuse with 403.
        """
        return self._conn.denial_status

    # -- handshake ----------------------------------------------------------------------

    async def accept(
        self, subprotocol: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Accept the handshake, optionally choosing one of the offered ``subprotocols``."""
        await self._conn.accept(subprotocol, _header_pairs(headers), self.subprotocols)

    async def reject(
        self, status: int = 403, body: bytes | str = b"", headers: Mapping[str, str] | None = None
    ) -> None:
        """Refuse the handshake with a real HTTP response (``status``, ``headers``, ``body``).

        Servers without the ASGI denial extension answer a plain 403 instead. After accept this
        is an error: use :meth:`close`.
        """
        data = body.encode() if isinstance(body, str) else bytes(body)
        await self._conn.deny(status, data, _header_pairs(headers))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket with ``code`` and ``reason`` (before accept: an HTTP 403).

        Raises ``RuntimeError`` if the socket is already closed; see :meth:`ensure_closed`.
        """
        await self._conn.close(code, reason)

    async def ensure_closed(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket unless it is already closed; safe to call at any time."""
        if not self._conn.phase.closed:
            await self._conn.close(code, reason)

    async def __aenter__(self) -> WebSocket:
        await self._accept_implicitly()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.ensure_closed()
            return
        # Left by an exception: close now with the code the close table gives it, even if the
        # handler catches the exception, since nothing outlives a closed `async with ws` block.
        # Cancellation and disconnects are left to the runtime (1001 at shutdown).
        sorted_out = classify(exc, (WebSocketClose, HTTPException))
        if sorted_out is not None and any(sorted_out):
            with trio.CancelScope(shield=True):
                await self.ensure_closed(*close_for(*sorted_out))

    async def _accept_implicitly(self) -> None:
        if self._conn.phase is _CONNECTING:
            await self._conn.accept(None, (), self.subprotocols, implicit=True)

    # -- receiving ----------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for a text frame, ``bytes`` for a binary one."""
        conn = self._conn
        if conn.phase is _CONNECTING:
            await conn.accept(None, (), self.subprotocols, implicit=True)
        # The connection's inbox directly: no coroutine of the connection's in between, on the
        # stack of every handler that waits for a message.
        try:
            return await conn.inbox.get()
        except StopAsyncIteration:
            raise conn.disconnect_error() from None

    async def receive_text(self) -> str:
        """The next message, which must be text (else close 1003 if uncaught)."""
        message = await self.receive()
        if not isinstance(message, str):
            raise UnexpectedMessageType("expected a text message, got binary")
        return message

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary (else close 1003 if uncaught)."""
        message = await self.receive()
        if not isinstance(message, bytes):
            raise UnexpectedMessageType("expected a binary message, got text")
        return message

    async def receive_json(self, loads: JSONLoads | None = None) -> Any:
        """The next message parsed as JSON (text or UTF-8 bytes; else close 1007 if uncaught)."""
        return _parse_json(await self.receive(), loads or json.loads)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return _Received(self)

    def iter_text(self) -> AsyncIterator[str]:
        """Iterate over text messages until the socket closes."""
        return Messages(self.receive_text)

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Iterate over binary messages until the socket closes."""
        return Messages(self.receive_bytes)

    def iter_json(self, loads: JSONLoads | None = None) -> AsyncIterator[Any]:
        """Iterate over messages parsed as JSON until the socket closes."""
        return Messages(partial(self.receive_json, loads))

    # -- typed messages -----------------------------------------------------------------

    async def receive_typed(self, type: Any = None) -> Any:
        """The next message, decoded and validated with msgspec as ``type`` (by default the
        route's ``receives=``): a Struct, a tagged union of them, a dataclass, a TypedDict...

        An invalid message goes as the route's ``invalid_messages`` says: ``"close"`` raises
        :class:`~trioweb.InvalidMessage` (uncaught: close 1007), ``"reply"`` answers the sender
        with an error frame and reads on. Past ``max_invalid_messages`` the socket is closed
        with 1008 and this raises :class:`~trioweb.WebSocketDisconnect`.
        """
        return await self._receive_typed(self._messages.reader(type))

    def iter_typed(self, type: Any = None) -> AsyncIterator[Any]:
        """Iterate over messages decoded as in :meth:`receive_typed` until the socket closes
        (the 1008 of ``max_invalid_messages`` included), for ``match``; an
        :class:`~trioweb.InvalidMessage` raised out of one step leaves the iterator usable."""
        return Messages(partial(self._receive_typed, self._messages.reader(type)))

    async def send_typed(self, message: Any) -> None:
        """Send ``message`` (a Struct, a dataclass, anything msgspec encodes) as JSON text;
        on a route with ``sends=``, a ``TypeError`` unless it is of one of those classes."""
        policy = self._messages  # (MessagePolicy.encode, inline: this is on every send)
        classes = policy.send_classes
        if classes is not None and not isinstance(message, classes):
            raise policy.refused(message)
        try:
            text = policy.encoder.encode(message).decode()
        except UnicodeEncodeError:
            text = policy.escaped(message)
        conn = self._conn
        if conn.phase is _CONNECTING:
            await conn.accept(None, (), self.subprotocols, implicit=True)
        await conn.send({"type": "websocket.send", "text": text})

    async def _receive_typed(self, reader: Reader) -> Any:
        conn = self._conn
        if conn.phase is _CONNECTING:
            await conn.accept(None, (), self.subprotocols, implicit=True)
        decode = reader.decode
        inbox = conn.inbox
        while True:
            try:
                message = await inbox.get()
            except StopAsyncIteration:
                raise conn.disconnect_error() from None
            try:
                return decode(message)
            except DECODE_ERRORS as exc:
                error = invalid_message(exc, message, reader)
            await self._invalid_message(error)

    async def _invalid_message(self, error: InvalidMessage) -> None:
        """Count ``error``'s message and deal with it as the policy says (or close 1008)."""
        policy = self._messages
        self._invalid += 1
        limit = policy.max_invalid_messages
        if limit is not None and self._invalid > limit:
            reason = f"more than {limit} invalid message{'s' if limit != 1 else ''}"
            await self.ensure_closed(CloseCode.POLICY_VIOLATION, reason)
            raise self._conn.disconnect_error() from error
        if policy.invalid_messages == "close":
            raise error
        await self._conn.send({"type": "websocket.send", "text": policy.reply(error)})

    # -- sending ------------------------------------------------------------------------

    # Each send builds its ASGI message and hands it to the connection itself, with no call
    # to another send method in between: they are on the path of every message out.

    def send(self, message: str | bytes) -> Awaitable[None]:
        """Send a text (``str``) or binary (``bytes``) message: ``await ws.send(message)``.

        A plain method that returns the connection's own send to await (no coroutine of its
        own on the path of every message), so a message of the wrong type raises ``TypeError``
        at the call.
        """
        if isinstance(message, str):
            event: dict[str, Any] = {"type": "websocket.send", "text": message}
        elif isinstance(message, (bytes, bytearray, memoryview)):
            event = {"type": "websocket.send", "bytes": bytes(message)}
        else:
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")
        conn = self._conn
        if conn.phase is _CONNECTING:
            return self._accept_then_send(event)
        return conn.send(event)

    async def _accept_then_send(self, event: dict[str, Any]) -> None:
        conn = self._conn
        await conn.accept(None, (), self.subprotocols, implicit=True)
        await conn.send(event)

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        conn = self._conn
        if conn.phase is _CONNECTING:
            await conn.accept(None, (), self.subprotocols, implicit=True)
        await conn.send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        conn = self._conn
        if conn.phase is _CONNECTING:
            await conn.accept(None, (), self.subprotocols, implicit=True)
        await conn.send({"type": "websocket.send", "bytes": data})

    def send_frame(self, message: str | bytes) -> Awaitable[None]:
        """Send ``message`` as :meth:`send` does, from a loop that forwards many messages.

        A plain method that returns the connection's own send for ``await``: no coroutine of
        the socket's sits on the caller's stack while the server suspends the send, which it
        does two or three times per message (see :meth:`Subscription.forward_to`). The type of
        ``message`` is not checked: ``str`` or ``bytes`` only.
        """
        conn = self._conn
        if conn.phase is not _CONNECTED:
            return self.send(message)  # before the accept, it accepts; after the close, it raises
        if isinstance(message, str):
            return conn.send({"type": "websocket.send", "text": message})
        return conn.send({"type": "websocket.send", "bytes": message})

    async def send_json(self, data: Any, dumps: JSONDumps | None = None) -> None:
        """Send ``data`` encoded as JSON in a text message."""
        await self.send_text((dumps or json_text)(data))

    # -- raw ASGI messages --------------------------------------------------------------

    async def send_raw(self, message: Mapping[str, Any]) -> None:
        """Send an ASGI message dict yourself, through the same runtime as every send.

        ``websocket.send`` (with ``text`` or ``bytes``), ``websocket.accept`` (with
        ``subprotocol`` and ``headers``) and ``websocket.close`` (with ``code`` and ``reason``)
        are taken; they keep the checkpoints, the send lock and the disconnect rules.
        """
        kind = message.get("type")
        if kind == "websocket.send":
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("a websocket.send message carries exactly one of text or bytes")
            await self._accept_implicitly()
            await self._conn.send(dict(message))
        elif kind == "websocket.accept":
            raw_headers = [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]
            await self._conn.accept(message.get("subprotocol"), raw_headers, self.subprotocols)
        elif kind == "websocket.close":
            await self.close(message.get("code", 1000), message.get("reason") or "")
        else:
            raise ValueError(
                "send_raw() takes websocket.send, websocket.accept or websocket.close, "
                f"not {kind!r}"
            )

    async def receive_raw(self) -> dict[str, Any]:
        """The next message as an ASGI ``websocket.receive`` dict (``text`` or ``bytes``).

        Like :meth:`receive`, it raises ``WebSocketDisconnect`` once the socket is closed.
        """
        message = await self.receive()
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}


def _parse_json(message: str | bytes, loads: JSONLoads) -> Any:
    try:
        return loads(message)
    except JSON_ERRORS as exc:
        raise InvalidJSONMessage(f"invalid JSON: {exc}", message) from exc


class _Received:
    """``async for message in ws``: the inbox's own ``get()``, which ends the iteration when
    the socket closes (and only then, as :class:`._messages.Messages`).

    ``__anext__`` is a plain method that returns that coroutine: between the handler and the
    inbox there is no frame on every message, nor on the stack of a handler waiting for one.
    """

    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    def __aiter__(self) -> _Received:
        return self

    def __anext__(self) -> Awaitable[str | bytes]:
        ws = self._ws
        if ws._conn.phase is _CONNECTING:
            return self._accept_then_get()
        return ws._conn.inbox.get()

    async def _accept_then_get(self) -> str | bytes:
        ws = self._ws
        try:
            await ws._conn.accept(None, (), ws.subprotocols, implicit=True)
        except WebSocketDisconnect:
            raise StopAsyncIteration from None
        return await ws._conn.inbox.get()
