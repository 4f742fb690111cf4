"""The handshake half of trioweb's WebSocket stream: what the app is offered when it is spawned,
and the accept, with trioweb's permessage-deflate negotiation.

- :class:`OfferDirectDelivery` wraps hypercorn's app wrapper for one stream, so that the scope
  the app gets offers the direct way in (``_types.DIRECT_DELIVERY``) for the very ``receive``
  hypercorn hands it.
- :func:`accept_handshake` is hypercorn's ``Handshake.accept`` with trioweb's deflate settings
  in place of its hard-coded ``PerMessageDeflate()`` (docs/hypercorn.md, fact 16).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from hypercorn.protocol.ws_stream import Handshake
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension
from wsproto.utilities import generate_accept_token

from ._deflate import Compression, DeflateExtension, negotiate
from ._types import DIRECT_DELIVERY, DirectPeer, Receive, Scope

__all__ = ["OfferDirectDelivery", "accept_handshake", "short_reason"]


class OfferDirectDelivery:
    """hypercorn's app wrapper, with trioweb's direct way in (``DIRECT_DELIVERY``) added to
    the scope of the one stream it is made for, naming the ``receive`` the app is given."""

    __slots__ = ("app", "attach")

    def __init__(self, app: Any, attach: Callable[[DirectPeer], bool]) -> None:
        self.app = app
        self.attach: Callable[[DirectPeer], bool] | None = attach

    def __call__(self, scope: Scope, receive: Receive, *args: Any) -> Awaitable[None]:
        # Not a coroutine: the app's own coroutine is returned, so no frame of this wrapper
        # stays under the app for the socket's life.
        attach, self.attach = self.attach, None
        if attach is not None:
            scope.setdefault("extensions", {})[DIRECT_DELIVERY] = {
                "attach": attach,
                "receive": receive,
            }
        result: Awaitable[None] = self.app(scope, receive, *args)
        return result


def short_reason(reason: str) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8)."""
    encoded = reason.encode("utf-8")
    return reason if len(encoded) <= 123 else encoded[:123].decode("utf-8", "ignore")


def accept_handshake(
    handshake: Handshake,
    subprotocol: str | None,
    additional_headers: Iterable[tuple[bytes, bytes]],
    compression: Compression | None,
) -> tuple[int, list[tuple[bytes, bytes]], Connection, DeflateExtension | None]:
    """hypercorn's ``Handshake.accept`` with trioweb's permessage-deflate negotiation in place
    of its hard-coded ``PerMessageDeflate()``."""
    headers: list[tuple[bytes, bytes]] = []
    if subprotocol is not None:
        if handshake.subprotocols is None or subprotocol not in handshake.subprotocols:
            raise Exception("Invalid Subprotocol")
        headers.append((b"sec-websocket-protocol", subprotocol.encode()))
    deflate: DeflateExtension | None = None
    if compression is not None and handshake.extensions:
        negotiated = negotiate(handshake.extensions, compression)
        if negotiated is not None:
            deflate, response = negotiated
            headers.append((b"sec-websocket-extensions", response.encode("ascii")))
    if handshake.key is not None:
        headers.append((b"sec-websocket-accept", generate_accept_token(handshake.key)))
    status_code = 200
    if handshake.http_version == "1.1":
        headers.extend([(b"upgrade", b"WebSocket"), (b"connection", b"Upgrade")])
        status_code = 101
    for name, value in additional_headers:
        if name == b"sec-websocket-protocol" or name.startswith(b":"):
            raise Exception(f"Invalid additional header, {name.decode()}")
        headers.append((name, value))
    handshake.accepted = True
    extensions: list[Extension] = [deflate] if deflate is not None else []
    return status_code, headers, Connection(ConnectionType.SERVER, extensions), deflate
