"""How a refused handshake is told to the client: the messages a denial sends to the server.

Three ways, decided per handshake:

==================================  ===================================================
the handshake                       the client gets
==================================  ===================================================
server with the denial extension    the HTTP response: status, headers, body
server without it                   a plain 403 (``websocket.close`` before accept)
a browser's, under                  an accept, then at once a Close with ``4000 +
``browser_denials="close"``, 4xx    status`` and the body's text (browsers hide HTTP
                                    statuses from pages: they would see 1006)
==================================  ===================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from ._types import WIRE_SETTINGS, Message
from .close_codes import CloseCode
from .exceptions import truncate_reason

__all__ = ["Denial", "denial"]


@dataclass(frozen=True)
class Denial:
    """What to send for a denial, and what the connection records of it."""

    #: The server messages, in order.
    messages: list[Message]
    #: The status the client was told (403 without the denial extension).
    status: int
    #: For a denial by close: its code, reason and the subprotocol the accept carried.
    close_code: int | None = None
    close_reason: str | None = None
    subprotocol: str | None = None

    @property
    def by_close(self) -> bool:
        """True if the client is told by an accept and a Close."""
        return self.close_code is not None


def denial(
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    supports_denial: bool,
    by_close: bool,
    subprotocol: str | None,
    close_timeout: float,
) -> Denial:
    """The messages that refuse a handshake with ``status`` (see the module's table)."""
    if not 100 <= status <= 599:
        raise ValueError(f"{status} is not an HTTP status")
    if by_close and 400 <= status <= 499:
        code = 4000 + status
        reason = truncate_reason(body.decode("utf-8", errors="replace") or _phrase(status))
        accept: Message = {
            "type": "websocket.accept",
            "headers": [],
            # No compression for a socket that sends one Close; trioweb's stream logs the
            # denial's status in the access log, not the 101 it answers with.
            WIRE_SETTINGS: {"close_timeout": close_timeout, "compression": None, "denied": status},
        }
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        close: Message = {"type": "websocket.close", "code": code, "reason": reason}
        return Denial([accept, close], status, code, reason, subprotocol)
    if not supports_denial:
        return Denial([{"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION}], 403)
    raw = [(k.lower(), v) for k, v in headers]
    names = {k for k, _ in raw}
    if body and b"content-type" not in names:
        raw.append((b"content-type", b"text/plain; charset=utf-8"))
    if b"content-length" not in names:
        raw.append((b"content-length", str(len(body)).encode()))
    return Denial(
        [
            {"type": "websocket.http.response.start", "status": status, "headers": raw},
            {"type": "websocket.http.response.body", "body": body},
        ],
        status,
    )


def _phrase(status: int) -> str:
    """The reason phrase of an HTTP status ("Unauthorized"), or "HTTP <status>"."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
