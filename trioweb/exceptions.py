"""The exceptions a user raises or catches, and the rules that map them to close codes."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import NoReturn

from .close_codes import CloseCode, as_close_code, check_close_code

__all__ = [
    "HTTPException",
    "InvalidJSONMessage",
    "InvalidMessage",
    "UnexpectedMessageType",
    "WebSocketClose",
    "WebSocketDisconnect",
    "abort",
]

# A close frame carries at most 125 bytes of payload, two of which are the code.
MAX_CLOSE_REASON_BYTES = 123


def truncate_reason(reason: str) -> str:
    """Cut ``reason`` to what fits in a close frame, on a UTF-8 character boundary."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


class WebSocketDisconnect(Exception):
    """The socket is closed: the client went away, or the app already closed it.

    Raised by every ``send*`` and ``receive*`` call once the close is known. Uncaught, it ends
    the connection quietly: it is not logged and does not turn into a 1011.
    """

    def __init__(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        super().__init__(code, reason)
        #: The close code: the client's, or the one the app closed with.
        self.code = as_close_code(code)
        #: The close reason, often empty (hypercorn does not pass the client's on).
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


class WebSocketClose(Exception):
    """Raise anywhere in a handler or its tasks to close the socket with ``code`` and ``reason``.

    Before the handshake is accepted, the client gets an HTTP 403 instead, as with ``close()``.
    """

    def __init__(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        code = check_close_code(code)
        super().__init__(code, reason)
        #: The close code the client will see.
        self.code = code
        #: The close reason the client will see, cut to 123 bytes of UTF-8.
        self.reason = truncate_reason(reason)

    def __str__(self) -> str:
        return f"close {self.code}" + (f": {self.reason}" if self.reason else "")


class InvalidMessage(WebSocketClose, ValueError):
    """A message did not decode or validate as the type asked for.

    Raised by :meth:`~trioweb.WebSocket.receive_typed` and
    :meth:`~trioweb.WebSocket.iter_typed` (under ``invalid_messages="close"``, the default).
    Uncaught, it closes the socket with 1007 (invalid payload) and :attr:`detail` as the reason;
    caught, nothing is closed and the socket is the handler's to use. Its ``str()`` says what
    was wrong with the message, not what happens to the socket.
    """

    def __init__(self, detail: str, path: str | None = None, data: str | bytes = "") -> None:
        super().__init__(CloseCode.INVALID_PAYLOAD, detail)
        #: What is wrong, for people and for the sender: ``"$.amount: expected int, got str"``,
        #: ``"invalid JSON: ..."``. Not cut to a close frame's size, as :attr:`reason` is.
        self.detail = detail
        #: Where in the message, as a JSON path (``"$.amount"``, ``"$.items[1].x"``); ``None``
        #: when the message is not JSON at all.
        self.path = path
        #: The message as it arrived.
        self.data = data

    def __str__(self) -> str:
        return self.detail


class InvalidJSONMessage(InvalidMessage):
    """A message asked for as JSON did not parse. Uncaught, it closes the socket with 1007.

    An :class:`InvalidMessage` (and so a ``ValueError``) whose :attr:`~InvalidMessage.path` is
    ``None``.
    """

    def __init__(self, reason: str, data: str | bytes = "") -> None:
        super().__init__(reason, None, data)


class UnexpectedMessageType(WebSocketClose, TypeError):
    """Text arrived where bytes were asked for, or the reverse. Uncaught, it closes with 1003.

    Its ``str()`` says what arrived, not what happens to the socket.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(CloseCode.UNSUPPORTED_DATA, reason)
        self._detail = reason

    def __str__(self) -> str:
        return self._detail


class HTTPException(Exception):
    """An HTTP error to answer with: ``status_code``, a ``detail`` body, optional ``headers``.

    In an HTTP handler it becomes the response. In a WebSocket handler or hook it becomes a
    denial response with that status before the handshake is accepted, and a close with code
    1008 (policy violation) and ``detail`` as the reason after.
    """

    def __init__(
        self,
        status_code: int,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not 400 <= status_code <= 599:
            raise ValueError(f"HTTPException needs an error status (400-599), not {status_code}")
        if detail is None:
            try:
                detail = HTTPStatus(status_code).phrase
            except ValueError:
                detail = ""
        super().__init__(status_code, detail)
        #: The HTTP status of the response.
        self.status_code = status_code
        #: The response body, as text.
        self.detail = detail
        #: Extra response headers.
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


def abort(
    status_code: int, detail: str | None = None, headers: Mapping[str, str] | None = None
) -> NoReturn:
    """Stop handling now and answer with an HTTP error (see :class:`HTTPException`)."""
    raise HTTPException(status_code, detail, headers)
