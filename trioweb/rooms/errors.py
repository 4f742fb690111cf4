"""Errors of rooms. Uncaught in a connection, the first two close its socket with their code."""

from __future__ import annotations

from ..close_codes import CloseCode
from ..exceptions import WebSocketClose

__all__ = ["InvalidName", "LeaseLost", "RoomFailed", "RoomUnavailable"]


class RoomFailed(WebSocketClose):
    """A room this connection had joined failed: one of its tasks raised (the error is logged
    with its traceback). The member's block was cancelled; uncaught, the socket closes with
    1011. The next join opens the room afresh."""

    def __init__(self, room: str, detail: str) -> None:
        super().__init__(CloseCode.INTERNAL_ERROR, "room failed")
        #: The room that failed.
        self.room = room
        #: What failed, in words (the log has the traceback; the client sees "room failed").
        self.detail = detail

    def __str__(self) -> str:
        return f"room {self.room!r} failed: {self.detail}"

    def __reduce__(self) -> tuple[type[RoomFailed], tuple[str, str]]:
        # Copied for each member it ends (one exception object per task), and picklable.
        return (type(self), (self.room, self.detail))


class RoomUnavailable(WebSocketClose):
    """The room store (Redis) could not be reached for a join or a state operation.

    Uncaught, the socket closes with 1013 (try again later): a client should reconnect with a
    backoff.
    """

    def __init__(self, room: str, detail: str) -> None:
        super().__init__(CloseCode.TRY_AGAIN_LATER, "room store unreachable, try again later")
        #: The room concerned.
        self.room = room
        #: What went wrong, in words.
        self.detail = detail

    def __str__(self) -> str:
        return f"room {self.room!r}: the room store is unreachable ({self.detail})"

    def __reduce__(self) -> tuple[type[RoomUnavailable], tuple[str, str]]:
        return (type(self), (self.room, self.detail))


class LeaseLost(RuntimeError):
    """A fenced state write was refused: this process no longer owns the room.

    Raised by ``room.state.update(..., fenced=True)``; the owner's tasks are being cancelled
    already, so there is nothing to do but let it propagate.
    """


class InvalidName(WebSocketClose, ValueError):
    """A room or user name given to :meth:`Rooms.join` is empty, too long or not valid Unicode.

    Names often come from clients (a URL path, a query): uncaught, it closes the socket with
    1008 (policy violation) and the reason, rather than logging an app error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(CloseCode.POLICY_VIOLATION, reason)

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[type[InvalidName], tuple[str]]:
        return (type(self), (self.reason,))
