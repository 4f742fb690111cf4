"""Keep one hypercorn HTTP/2 bug to the connection that hits it (docs/hypercorn.md, fact 13).

The bug, in hypercorn 0.18.0 (``hypercorn/protocol/h2.py``, ``H2Protocol._handle_events``)::

    elif isinstance(event, h2.events.DataReceived):
        await self.streams[event.stream_id].handle(Body(...))

hypercorn drops a stream from ``self.streams`` as soon as the app has sent its whole response.
For h2 the stream is then only half-closed: the client may still send the rest of its request
body (RFC 9113, section 8.1, lets a server answer before the request is complete). A DATA frame
that arrives then becomes a ``DataReceived`` event for a stream hypercorn has already dropped,
so the lookup raises ``KeyError``. Nothing catches it. It leaves the connection's task group,
then ``trio.serve_listeners``, whose handler nursery is hypercorn's server nursery. The whole
worker stops: every connection is dropped, the listener is closed and ``serve()`` raises. Any
client can trigger it, because hypercorn accepts h2c with prior knowledge on every cleartext
port and nothing in its config turns that off. The client need not be hostile: uploading a body
to an endpoint that answers early (401, 405, 413) is enough.

The guard wraps that one method. Right before each ``DataReceived`` event is handled, it checks
that event against ``self.streams``. If the stream has been dropped, the guard handles the event
itself, the way section 8.1 says. The bytes are thrown away but credited back to flow control,
so the connection's receive window does not shrink. If the frame did not end the request and the
response's END_STREAM has gone out (hypercorn's send task has let go of the stream's buffer),
the stream is reset with NO_ERROR to ask the client to stop sending. If END_STREAM has not gone
out yet, the reset waits for the client's next frame, so a complete response is never cut short.
Only that stream changes. Every other event goes to hypercorn's own method unchanged, one event
per call.

The check must come right before the lookup, not once per batch: a stream can disappear while an
earlier event of the same batch is handled (handing a body chunk to a full app queue waits, and
the app may finish meanwhile). Between the check and hypercorn's lookup there is no checkpoint.
The only cost is that hypercorn's flush runs once per event instead of once per batch, and a
flush with nothing queued writes nothing. No other event can hit a dropped stream:
``StreamEnded`` already catches ``KeyError``, and the stream-reset and window-update handlers
check with ``in``.

A second, general guard backs the first one up: hypercorn runs each TCP connection in a task of
``trio.serve_listeners``, so *any* exception escaping one connection's protocol code stops the
whole worker the same way. Other paths exist: a client that pipelines a WebSocket frame right
behind its upgrade request makes hypercorn answer 400 while h11 still expects the upgrade, and
h11's ``LocalProtocolError`` escapes (tests/test_hostile.py). ``TCPServer.run`` is wrapped so that
an ``Exception`` from one connection closes that connection only: a protocol error a client
caused is logged in one line at WARNING, anything else at ERROR with its traceback, since it is a
bug somewhere. Cancellation and ``KeyboardInterrupt`` pass untouched.

Remove the HTTP/2 guard (and its part of ``install()``) once trioweb requires a
hypercorn that handles ``DataReceived`` for a dropped stream itself. Upstream pull requests
pgjones/hypercorn#312, #334 and #365 propose exactly that; none was in a release as of 0.18.0.
``tests/test_http2_attack.py`` should then pass without the guard.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.trio.tcp_server import TCPServer

from . import _accept_log, _http1_guard, _hypercorn_tcp, _ws_install
from ._failures import PROTOCOL_ERRORS, leaves
from ._hypercorn_gate import code_names, gate

__all__ = ["VERIFIED_VERSIONS", "install"]

logger = logging.getLogger(__name__)

#: hypercorn releases whose ``H2Protocol._handle_events`` was read and tested against this guard.
VERIFIED_VERSIONS = frozenset({"0.18.0"})

_HandleEvents = Callable[[H2Protocol, list[h2.events.Event]], Coroutine[Any, Any, None]]
_MARKER = "__trioweb_h2_guard__"
_lock = threading.Lock()
_outcome: bool | None = None


def install() -> bool:
    """Guard hypercorn's HTTP/2 protocol once per process; return whether the guard is in place.

    Later calls do nothing and return the first call's answer. With a hypercorn release not in
    :data:`VERIFIED_VERSIONS`, the guard is still applied if the method it wraps has the
    expected signature and still handles ``DataReceived`` through ``self.streams``. In that case
    a warning asks someone to check whether the guard is still needed. If the method has changed
    shape, the guard is not applied and a warning says so.
    """
    global _outcome
    with _lock:
        if _outcome is None:
            _install_connection_backstop()
            _ws_install.install()
            _http1_guard.install()  # ambiguous HTTP/1.1 framing: 400 and close (fact 20)
            _accept_log.install()  # out of file descriptors: one line, not a traceback a retry
            _hypercorn_tcp.install()  # no trio work that does nothing on each read and write
            _outcome = _apply()
        return _outcome


def _install_connection_backstop() -> None:
    """Confine an exception from one connection's protocol code to that connection."""
    original = TCPServer.run
    if getattr(original, _MARKER, False):
        return

    @wraps(original)
    async def run(self: TCPServer) -> None:
        try:
            await original(self)
        except Exception as exc:  # never BaseException: cancellation must pass
            if all(isinstance(leaf, PROTOCOL_ERRORS) for leaf in leaves(exc)):
                leaf = next(leaves(exc))
                logger.warning("dropped a client that broke the protocol: %s", leaf)
            else:
                logger.error("hypercorn failed on one connection; closed it", exc_info=exc)
            with contextlib.suppress(Exception):
                await self.stream.aclose()

    setattr(run, _MARKER, True)
    TCPServer.run = run  # type: ignore[method-assign]


def _apply() -> bool:
    original = H2Protocol._handle_events
    if getattr(original, _MARKER, False):
        return True  # already guarded (this module was imported twice, e.g. reloaded)
    if not gate(
        logger,
        "trioweb's HTTP/2 guard",
        VERIFIED_VERSIONS,
        _shape_problem(),
        not_applied="not guarding HTTP/2 against DATA on finished streams",
        unprotected="if that bug is still there, one such frame stops the whole server",
        module="trioweb/_hypercorn_guard.py",
    ):
        return False
    H2Protocol._handle_events = _guarded(original)  # type: ignore[method-assign, assignment]
    return True


def _shape_problem() -> str | None:
    """Why ``H2Protocol`` is not what this guard was written for, or None if it is."""
    method = H2Protocol._handle_events
    if not inspect.iscoroutinefunction(method):
        return "H2Protocol._handle_events is not a coroutine function"
    parameters = list(inspect.signature(method).parameters)
    if parameters != ["self", "events"]:
        return f"H2Protocol._handle_events takes {parameters}, not ['self', 'events']"
    missing = {"DataReceived", "streams", "_flush"} - code_names(method)
    missing |= {"connection", "streams", "stream_buffers"} - code_names(H2Protocol.__init__)
    if missing:
        return f"H2Protocol no longer uses {', '.join(sorted(missing))} as expected"
    return None


def _guarded(handle_events: _HandleEvents) -> _HandleEvents:
    @wraps(handle_events)
    async def guarded(self: H2Protocol, events: list[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                _discard(self, event)
            else:
                await handle_events(self, [event])
        await self._flush()  # what _discard queued; hypercorn also flushes for an empty batch

    setattr(guarded, _MARKER, True)
    return guarded


def _discard(protocol: H2Protocol, event: h2.events.DataReceived) -> None:
    """Drop request data that arrived after the response was complete (RFC 9113, 8.1)."""
    logger.debug("HTTP/2: ignoring DATA on stream %d, already answered", event.stream_id)
    connection = protocol.connection
    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    if event.stream_ended is None and event.stream_id not in protocol.stream_buffers:
        # The stream can be closed already (a later frame of the same batch ended or reset it,
        # or the connection is going away): then there is nothing left to reset.
        with contextlib.suppress(h2.exceptions.ProtocolError):
            connection.reset_stream(event.stream_id, h2.errors.ErrorCodes.NO_ERROR)
