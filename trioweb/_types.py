"""ASGI type aliases, kept loose on purpose: servers add keys the spec does not list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, cast

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The key under which a trioweb app puts its wire settings in ``websocket.accept``: a dict
#: with ``max_message_size``, ``compression`` and ``close_timeout`` (and ``denied``, the HTTP
#: status of a denial sent as a close, for the access log), read by trioweb's WebSocket stream
#: for hypercorn (``trioweb/_ws_stream.py``) and ignored by other servers.
WIRE_SETTINGS = "trioweb.websocket"
#: A key trioweb's wire stream adds (True) to a ``websocket.disconnect`` that is its own close
#: (a message over the limit: 1009; a protocol error: 1002/1007), not the client's.
CLOSED_BY_SERVER = "trioweb.closed_by_server"

#: Seconds to wait for the client's Close after the server sent its own, unless the app says.
DEFAULT_CLOSE_TIMEOUT = 5.0

#: The ASGI extension through which a server (trioweb's WebSocket stream) or an in-process
#: client (the test client) hands a trioweb app's messages straight to its connection, sparing
#: each message the ASGI queue and the wake-up of a reader task: ``{"attach": attach,
#: "receive": receive}``. The app calls ``attach(peer)`` (a :class:`DirectPeer`) only if the
#: ``receive`` it was given is that very one, so that a middleware wrapping receive still sees
#: every message; from then on every message goes to ``peer.deliver(data)``. If ``attach``
#: returns True, the end does too (``peer.disconnected(...)`` in place of a
#: ``websocket.disconnect`` event), and the app no longer reads its ASGI receive at all.
DIRECT_DELIVERY = "trioweb.direct_delivery"


class _Sent(tuple[()]):
    """An awaitable that is already done: an empty tuple whose ``__await__`` is the tuple's own
    iterator, in C, so that awaiting it runs no Python frame and never yields."""

    __slots__ = ()
    __await__ = tuple.__iter__


#: What an in-process server's ASGI send (the test client's) returns for a message it has
#: taken without yielding: the app's send, seeing it, knows that the server's send was no
#: schedule point without counting the task's trips through trio's scheduler (and yields
#: itself). Awaiting it does nothing.
SENT = cast(Awaitable[None], _Sent())


class DirectPeer(Protocol):
    """The connection's side of :data:`DIRECT_DELIVERY`."""

    def deliver(self, data: str | bytes) -> bool:
        """Take one message; False once the socket is ending (the message is not wanted)."""
        ...

    def disconnected(self, code: int, reason: str, closed_by_server: bool) -> None:
        """The socket has ended, with this close code and reason (``closed_by_server``: the
        server's own close, such as 1009 or 1002, rather than the client's)."""
        ...
