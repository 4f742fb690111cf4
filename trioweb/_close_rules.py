"""The close table: how a socket ends, decided from how its scope ended. No I/O.

docs/close-codes.md is the same table for users. The session (``_session.py``) gathers the
facts (the errors left unhandled, the control exceptions, the denial an error handler or the
handler itself gave, the close the server decided on its own) and carries out what
:func:`end_of_session` decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._phases import Phase
from .close_codes import CloseCode
from .exceptions import HTTPException, WebSocketClose

__all__ = ["Close", "Deny", "close_for", "end_of_session"]


@dataclass(frozen=True, slots=True)
class Deny:
    """Answer the handshake with this HTTP response."""

    status: int
    body: bytes
    headers: Sequence[tuple[bytes, bytes]] = ()


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with this code and reason (before accept: an HTTP 403)."""

    code: int
    reason: str


def close_for(errors: list[Exception], controls: list[Exception]) -> tuple[int, str]:
    """The close code and reason the close table gives for how a scope ended."""
    if errors:
        return CloseCode.INTERNAL_ERROR, "internal error"
    if isinstance(close := _first(controls, WebSocketClose), WebSocketClose):
        return close.code, close.reason
    if isinstance(http := _first(controls, HTTPException), HTTPException):
        return CloseCode.POLICY_VIOLATION, http.detail
    return CloseCode.NORMAL, ""


def end_of_session(
    phase: Phase,
    errors: list[Exception],
    controls: list[Exception],
    denial: Deny | None,
    server_close: tuple[int, str] | None,
) -> Deny | Close | None:
    """What ends the socket once its scope has ended; None if it is closed already.

    - Closed already (by the app or the client): nothing.
    - Not accepted yet: the denial if one was given; else 500 for an error, the status of an
      ``abort()``, 503 for a shutdown; else a close (a ``WebSocketClose``'s code and reason, or
      1000), which before accept is HTTP 403.
    - Accepted: the code the close table gives the errors and controls; with none, the close
      the server decided (1008 overflow, 1009, 1001 idle or shutdown), else 1000.
    """
    if phase.closed:
        return None
    if phase is Phase.CONNECTING:
        if denial is not None:
            return denial
        if errors:
            return Deny(500, b"Internal Server Error")
        if isinstance(http := _first(controls, HTTPException), HTTPException):
            return Deny(http.status_code, http.detail.encode(), _raw(http.headers))
        if server_close is not None and server_close[0] == CloseCode.GOING_AWAY:
            return Deny(503, b"server shutting down")
        # A WebSocketClose's reason goes with it: a denial sent as a close (4403) carries it.
        return Close(*close_for([], controls))
    if errors or controls or server_close is None:
        return Close(*close_for(errors, controls))
    return Close(*server_close)


def _first(items: list[Exception], kind: type[Exception]) -> Exception | None:
    return next((item for item in items if isinstance(item, kind)), None)


def _raw(headers: Mapping[str, str] | None) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
    )
