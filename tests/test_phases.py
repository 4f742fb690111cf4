"""The socket's phases and the close table, as pure functions: no I/O, no trio.

tests/test_races.py drives the same rules through real interleavings; these pin the tables.
"""

from __future__ import annotations

import itertools

import pytest

from trioweb import CloseCode, HTTPException, WebSocketClose
from trioweb._close_rules import Close, Deny, close_for, end_of_session
from trioweb._phases import Event, Phase, advance


def test_the_life_of_a_socket_closed_by_the_app():
    phase = advance(Phase.CONNECTING, Event.ACCEPTED)
    assert phase is Phase.CONNECTED and not phase.closed
    phase = advance(phase, Event.APP_CLOSED)
    assert phase is Phase.CLOSED_BY_APP and phase.closed and not phase.disconnected
    phase = advance(phase, Event.DISCONNECTED)
    assert phase is Phase.DONE and phase.disconnected


def test_a_client_close_is_final_and_the_app_cannot_close_after_it():
    phase = advance(Phase.CONNECTED, Event.DISCONNECTED)
    assert phase is Phase.CLOSED_BY_CLIENT and phase.closed and phase.disconnected
    with pytest.raises(RuntimeError, match="closed by the client cannot take 'app closed'"):
        advance(phase, Event.APP_CLOSED)


def test_a_close_that_came_while_the_accept_was_going_out_stands():
    for closed in (Phase.CLOSED_BY_APP, Phase.CLOSED_BY_CLIENT, Phase.DONE):
        assert advance(closed, Event.ACCEPTED) is closed


def test_every_move_is_in_the_table_or_refused():
    allowed = 0
    for phase, event in itertools.product(Phase, Event):
        try:
            after = advance(phase, event)
        except RuntimeError:
            continue
        allowed += 1
        assert not (phase.closed and not after.closed), "no way back to an open phase"
        assert not (phase.disconnected and not after.disconnected)
    assert allowed == 11
    with pytest.raises(RuntimeError):
        advance(Phase.CONNECTED, Event.ACCEPTED)  # a second accept is a bug
    with pytest.raises(RuntimeError):
        advance(Phase.DONE, Event.APP_CLOSED)


# -- the close table ---------------------------------------------------------------------------


def test_after_accept_the_close_code_follows_what_ended_the_scope():
    error, close = ValueError("boom"), WebSocketClose(4001, "bye")
    http = HTTPException(401, "who are you")
    assert end_of_session(Phase.CONNECTED, [error], [], None, None) == Close(1011, "internal error")
    assert end_of_session(Phase.CONNECTED, [], [close], None, None) == Close(4001, "bye")
    assert end_of_session(Phase.CONNECTED, [], [http], None, None) == Close(1008, "who are you")
    assert end_of_session(Phase.CONNECTED, [], [], None, None) == Close(1000, "")
    overflow = (CloseCode.POLICY_VIOLATION, "inbox overflow")
    assert end_of_session(Phase.CONNECTED, [], [], None, overflow) == Close(*overflow)
    # An error outranks the server's own decision, and a WebSocketClose an abort().
    assert end_of_session(Phase.CONNECTED, [error], [], None, overflow).code == 1011
    assert close_for([], [http, close]) == (4001, "bye")


def test_before_accept_the_handshake_gets_an_http_answer():
    error, http = ValueError("boom"), HTTPException(401, "log in", {"WWW-Authenticate": "Bearer"})
    given = Deny(418, b"teapot")
    assert end_of_session(Phase.CONNECTING, [], [], given, None) is given
    assert end_of_session(Phase.CONNECTING, [error], [], None, None) == Deny(
        500, b"Internal Server Error"
    )
    assert end_of_session(Phase.CONNECTING, [], [http], None, None) == Deny(
        401, b"log in", ((b"www-authenticate", b"Bearer"),)
    )
    shutdown = (CloseCode.GOING_AWAY, "server shutting down")
    assert end_of_session(Phase.CONNECTING, [], [], None, shutdown) == Deny(
        503, b"server shutting down"
    )
    # Nothing said: a close before accept, which servers answer with HTTP 403.
    assert end_of_session(Phase.CONNECTING, [], [], None, None) == Close(1000, "")
    # A WebSocketClose's reason goes with it (a denial sent as a close, 4403, carries it).
    close = WebSocketClose(4001, "bye")
    assert end_of_session(Phase.CONNECTING, [], [close], None, None) == Close(4001, "bye")


def test_a_socket_closed_already_needs_nothing_more():
    for phase in (Phase.CLOSED_BY_APP, Phase.CLOSED_BY_CLIENT, Phase.DONE):
        assert end_of_session(phase, [ValueError()], [], None, None) is None
