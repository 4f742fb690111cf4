"""ASGI type aliases, kept loose on purpose: servers add keys the spec does not list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

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
