"""Where a socket is in its life: named phases and the table of how it moves between them.

Protocol state without I/O, in the manner of h11 and wsproto: the connection runtime
(``_connection.py``) reports what happened (:class:`Event`) and :func:`advance` says where that
leaves the socket. A move the table does not list is a bug in the runtime, and raises.

======================  =================  ============================================
phase                   event              next
======================  =================  ============================================
CONNECTING              ACCEPTED           CONNECTED
CONNECTING, CONNECTED   APP_CLOSED         CLOSED_BY_APP (a close frame, or before accept
                                           a denial; the client's answer still to come)
CONNECTING, CONNECTED   DISCONNECTED       CLOSED_BY_CLIENT (its close, or the network)
CLOSED_BY_APP           DISCONNECTED       DONE (the client's answer to our close)
any closed phase        ACCEPTED           unchanged (a close came while the accept was
                                           on its way out: the close stands)
CLOSED_BY_CLIENT, DONE  DISCONNECTED       unchanged (the transport failing after the end)
======================  =================  ============================================

Two facts stay beside the phase because they are not about it: whether an accept went out
(a close before it is an HTTP 403, after it a close frame), and the close the server decided on
its own (inbox overflow, shutdown), which is a decision still to carry out.
"""

from __future__ import annotations

import enum

__all__ = ["Event", "Phase", "advance"]


class Phase(enum.Enum):
    """The phases of a socket, from the handshake to the end."""

    #: The handshake has not been answered.
    CONNECTING = "connecting"
    #: Accepted: messages flow both ways.
    CONNECTED = "connected"
    #: The app has closed (or refused the handshake); the client's disconnect is still to come.
    CLOSED_BY_APP = "closed by the app"
    #: The client closed, or the connection was lost, before the app closed.
    CLOSED_BY_CLIENT = "closed by the client"
    #: The app closed and the client's disconnect has come: nothing more will happen.
    DONE = "done"

    # Hashed by identity (members are singletons), in C: Enum's own __hash__ is Python code,
    # and the table below and ``closed`` hash a phase several times in every socket's life.
    __hash__ = object.__hash__

    @property
    def closed(self) -> bool:
        """Either side has closed: sends and receives fail from here on."""
        return self not in _OPEN

    @property
    def disconnected(self) -> bool:
        """The server has reported the end: its ASGI ``receive()`` must not be called again."""
        return self is Phase.CLOSED_BY_CLIENT or self is Phase.DONE


class Event(enum.Enum):
    """What happened to a socket."""

    #: The accept went out.
    ACCEPTED = "accepted"
    #: The app decided to close (or to refuse the handshake).
    APP_CLOSED = "app closed"
    #: The server reported ``websocket.disconnect``, or the transport failed.
    DISCONNECTED = "disconnected"

    __hash__ = object.__hash__  # as Phase's


_OPEN = frozenset({Phase.CONNECTING, Phase.CONNECTED})

_TABLE: dict[tuple[Phase, Event], Phase] = {
    (Phase.CONNECTING, Event.ACCEPTED): Phase.CONNECTED,
    (Phase.CONNECTING, Event.APP_CLOSED): Phase.CLOSED_BY_APP,
    (Phase.CONNECTED, Event.APP_CLOSED): Phase.CLOSED_BY_APP,
    (Phase.CONNECTING, Event.DISCONNECTED): Phase.CLOSED_BY_CLIENT,
    (Phase.CONNECTED, Event.DISCONNECTED): Phase.CLOSED_BY_CLIENT,
    (Phase.CLOSED_BY_APP, Event.DISCONNECTED): Phase.DONE,
    (Phase.CLOSED_BY_APP, Event.ACCEPTED): Phase.CLOSED_BY_APP,
    (Phase.CLOSED_BY_CLIENT, Event.ACCEPTED): Phase.CLOSED_BY_CLIENT,
    (Phase.DONE, Event.ACCEPTED): Phase.DONE,
    (Phase.CLOSED_BY_CLIENT, Event.DISCONNECTED): Phase.CLOSED_BY_CLIENT,
    (Phase.DONE, Event.DISCONNECTED): Phase.DONE,
}


def advance(phase: Phase, event: Event) -> Phase:
    """The phase after ``event``; ``RuntimeError`` for a move the table does not allow."""
    try:
        return _TABLE[phase, event]
    except KeyError:
        raise RuntimeError(f"a socket {phase.value} cannot take {event.value!r}") from None
