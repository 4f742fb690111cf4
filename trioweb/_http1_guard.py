"""Refuse HTTP/1.1 requests whose body framing is ambiguous (docs/hypercorn.md, fact 20).

The bug, with hypercorn 0.18.0 on h11 0.16.0: a request that carries both ``Content-Length``
and ``Transfer-Encoding: chunked`` is framed by ``Transfer-Encoding`` alone (h11's
``_body_framing``, "T-E beats C-L"), answered, and the connection is kept alive for the next
request. That is the shape of request smuggling: a proxy in front that frames the same bytes
by ``Content-Length`` sends what this server reads as a second request inside the first one's
body, and the answer to it goes to whoever's request comes next. RFC 9112, section 6.1, lets a
server either reject such a request or answer it by ``Transfer-Encoding`` alone, and says that
"regardless, the server MUST close the connection after responding". Neither h11 nor
hypercorn's ``H11Protocol`` looks at the combination, so the MUST is broken. The same section
says an HTTP/1.0 request with ``Transfer-Encoding`` must be treated as having faulty framing:
h11 reads it as chunked (it does close the connection afterwards, since HTTP/1.0 has no
keep-alive by default).

What careful servers do (read in their sources): nginx answers both shapes with 400 and closes
(since 1.21.1 for ``Content-Length`` with ``Transfer-Encoding``, since 1.21.2 for
``Transfer-Encoding`` in HTTP/1.0; ``ngx_http_process_request_header``). llhttp, the parser of
Node.js and of uvicorn's default ``httptools`` protocol, rejects the pair
(``HPE_UNEXPECTED_CONTENT_LENGTH``; only a "lenient" flag lets it through) and the server
answers 400 and closes. aiohttp's parsers refuse it with 400 too (aiohttp#6182). uvicorn's
``h11`` protocol has no check of its own and behaves like hypercorn.

The fix: hypercorn's HTTP/1 protocol gets an h11 connection whose ``next_event`` raises
``h11.RemoteProtocolError`` (status hint 400) for such a request, the moment h11 has parsed its
head. hypercorn already handles that error the way it handles any malformed request: it sends
``400`` with ``connection: close`` and closes the connection without reading further, so the
app never sees the request and nothing pipelined behind it is parsed. h11 itself and every
other use of it in the process are untouched: only the connections hypercorn's HTTP/1 protocol
creates are of the checked class. HTTP/2 needs nothing: frames carry the body, and h2 refuses a
request with ``Transfer-Encoding`` (RFC 9113, 8.2.2) before hypercorn sees it
(``tests/test_http_edge.py`` checks both).

The upstream fix belongs in h11, which frames the message: raise ``RemoteProtocolError`` from
``Connection.next_event`` for a request with both headers, or with ``Transfer-Encoding`` in
HTTP/1.0 (or at least turn keep-alive off for it). Failing that, hypercorn could check the
``h11.Request`` in ``H11Protocol._handle_events`` before ``_create_stream``. Remove this module
(and its line in ``_hypercorn_guard.install()``) once the h11 and hypercorn that trioweb
requires do either; ``tests/test_http_edge.py`` must then pass without it.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import h11
import hypercorn.protocol
from hypercorn.protocol.h11 import H11Protocol

from ._hypercorn_gate import code_names, gate

__all__ = ["VERIFIED_VERSIONS", "FramingCheckedConnection", "ambiguous_framing", "install"]

logger = logging.getLogger(__name__)

#: hypercorn releases whose ``H11Protocol`` was read and tested against this guard.
VERIFIED_VERSIONS = frozenset({"0.18.0"})


def ambiguous_framing(request: h11.Request) -> str | None:
    """Why ``request``'s body framing is ambiguous (RFC 9112, 6.1), or None if it is not.

    h11 has already refused a ``Transfer-Encoding`` other than ``chunked``, repeated ones, and
    conflicting ``Content-Length`` values; what it lets through is checked here.
    """
    # raw_items() is one list comprehension; iterating ``request.headers`` itself goes through
    # collections.abc's Sequence.__iter__, a Python call per header and an IndexError to end,
    # which cost this check more than the rest of the stream's handshake (a third of trioweb's
    # lead over hypercorn's own stream, counted in instructions under callgrind).
    names = {name.lower() for name, _ in request.headers.raw_items()}
    if b"transfer-encoding" not in names:
        return None
    if b"content-length" in names:
        return "a request with both Content-Length and Transfer-Encoding (RFC 9112, 6.1)"
    if request.http_version < b"1.1":
        return "an HTTP/1.0 request with Transfer-Encoding (RFC 9112, 6.1)"
    return None


class FramingCheckedConnection(h11.Connection):
    """An h11 server connection that refuses a request whose body framing is ambiguous.

    ``next_event`` raises ``h11.RemoteProtocolError`` (``error_status_hint`` 400) for such a
    request instead of returning it, and keeps raising it: nothing after it on the connection
    is parsed.
    """

    _refused: str | None = None

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """h11's next event, unless it is a request with ambiguous framing (see above)."""
        if self._refused is None:
            event = super().next_event()
            if not isinstance(event, h11.Request):
                return event
            self._refused = ambiguous_framing(event)
            if self._refused is None:
                return event
            logger.debug("refusing %s with 400", self._refused)
        raise h11.RemoteProtocolError(self._refused, error_status_hint=400)


class FramingCheckedH11Protocol(H11Protocol):
    """hypercorn's HTTP/1 protocol on a :class:`FramingCheckedConnection`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The connection H11Protocol.__init__ made becomes the checked class (which adds a
        # method and no state), rather than a second one being built: that is a whole h11
        # Connection more per TCP connection. Nothing has been fed to it yet.
        if type(self.connection) is h11.Connection:
            self.connection.__class__ = FramingCheckedConnection
        else:  # not the class this was written for: a checked one of our own, as before
            self.connection = FramingCheckedConnection(
                h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size
            )


def _shape_problem() -> str | None:
    """Why hypercorn's HTTP/1 protocol is not what this guard was written for, or None."""
    current = getattr(hypercorn.protocol, "H11Protocol", None)
    if current is not H11Protocol and current is not FramingCheckedH11Protocol:
        return "hypercorn.protocol no longer creates H11Protocol"
    handle_events = H11Protocol._handle_events
    if not inspect.iscoroutinefunction(handle_events):
        return "H11Protocol._handle_events is not a coroutine function"
    # A RemoteProtocolError from next_event must still become an error response and a close.
    missing = {"next_event", "RemoteProtocolError", "_send_error_response", "Closed"}
    missing -= code_names(handle_events)
    missing |= {"Connection", "h11_max_incomplete_size"} - code_names(H11Protocol.__init__)
    if missing:
        return f"H11Protocol no longer uses {', '.join(sorted(missing))} as expected"
    return None


def install() -> bool:
    """Make hypercorn's HTTP/1 connections refuse ambiguous framing; return whether they do.

    Idempotent. With a hypercorn release not in :data:`VERIFIED_VERSIONS` the guard is still
    installed if ``H11Protocol`` has the expected shape, with a warning asking someone to check
    whether it is still needed; if the shape has changed, it is not installed and a warning
    says so.
    """
    if not gate(
        logger,
        "trioweb's HTTP/1.1 framing check",
        VERIFIED_VERSIONS,
        _shape_problem(),
        not_applied="not refusing HTTP/1.1 requests with both Content-Length and Transfer-Encoding",
        unprotected="behind a proxy that is a request smuggling risk",
        module="trioweb/_http1_guard.py",
    ):
        return False
    hypercorn.protocol.H11Protocol = FramingCheckedH11Protocol  # type: ignore[attr-defined]
    return True
