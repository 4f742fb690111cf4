"""The ASGI entry point, and a WebSocket session from the handshake to the after hooks.

:func:`asgi_entry` is ``App.__call__``. A WebSocket scope is served right here: routed,
admitted against the limits, its hooks and handler run in the connection's nursery, closed as
the close table (``_close_rules.py``) says, then its ``after_websocket`` hooks run. HTTP and
lifespan scopes go to the host's own ASGI apps for them.

The session knows the app only as a :class:`Host`: its router, its live connections, the
resolved settings of a route (``_settings.py``), and the ASGI apps for HTTP and lifespan.

Why the entry is the session itself rather than a coroutine it awaits, and admission a plain
function: this frame lives as long as the socket and sits under every step of its handler, so
it is the only one, and it keeps no more than it needs (not the connect message, the route
match or the origin). Each frame less is some 250 bytes a socket, and a shorter path on every
message.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol, cast

import trio

from ._close_rules import Close, Deny, end_of_session
from ._connection import Connection
from ._failures import sort_failure
from ._phases import Phase
from ._reader import read_loop, watch_silence
from ._registry import ConnectionRegistry
from ._settings import WebSocketSettings, find_errorhandler
from ._types import Receive, Scope, Send
from .exceptions import HTTPException, WebSocketClose
from .http import PlainTextResponse, Response, make_response
from .logs import SESSION_FIELDS
from .nursery import ConnectionNursery
from .routing import Route, Router
from .websocket import WebSocket

__all__ = ["Host", "asgi_entry"]

logger = logging.getLogger("trioweb")
session_logger = logging.getLogger("trioweb.session")

#: The reader's and the idle watcher's task names, made once rather than once per socket.
_READER_NAME = "trioweb._reader.read_loop"
_WATCHER_NAME = "trioweb._reader.watch_silence"


class Host(Protocol):
    """What a WebSocket session needs of the app that serves it (``App`` is one)."""

    #: The route table.
    router: Router
    #: The open sockets.
    connections: ConnectionRegistry

    def websocket_settings(self, route: Route | None) -> WebSocketSettings:
        """The resolved settings of ``route`` (None: a handshake no route matched)."""
        ...

    async def serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app for HTTP scopes."""
        ...

    async def serve_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app for the lifespan scope."""
        ...


async def asgi_entry(host: Host, scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI 3 entry point (it is ``App.__call__``)."""
    kind = scope["type"]
    if kind != "websocket":
        if kind == "http":
            return await host.serve_http(scope, receive, send)
        if kind == "lifespan":
            return await host.serve_lifespan(scope, receive, send)
        raise ValueError(f"trioweb cannot serve ASGI scope type {kind!r}")
    if (await receive())["type"] != "websocket.connect":
        return  # the client left before the handshake reached us
    connection, ws, route, settings = _admit(host, scope, receive, send)
    if isinstance(route, tuple):
        if (observer := host.connections.observer) is not None:  # the route it asked for
            observer.refused(host.router.match_websocket(scope.get("path", "/")).route, route[0])
        await connection.deny(route[0], route[1], ())
        if connection.close_code is not None:  # a denial by close: read the client's answer
            await connection.drain_until_disconnect()
        return
    # (Few locals: this frame lives as long as the socket, and each costs 8 bytes a socket.)
    registry = host.connections
    failure: BaseException | None = None
    returned: Any = None
    try:
        try:
            with trio.CancelScope() as connection_scope:
                connection.cancel_scope = connection_scope
                registry.add(connection, route)
                try:
                    # Made here, awaited in one of two places below: no frame in between for
                    # the common case (a handler with no hooks and no nursery).
                    running = (
                        _run_handler(connection, ws, route, settings)
                        if settings.before_websocket or route.nursery_param is not None
                        else route.handler(ws, **ws.path_params)
                    )
                    if connection.attach(scope, receive) and connection.idle_timeout is None:
                        returned = await running  # the server tells us everything: no task
                    else:
                        async with trio.open_nursery() as nursery:
                            if connection.direct_end:
                                nursery.start_soon(watch_silence, connection, name=_WATCHER_NAME)
                            else:
                                nursery.start_soon(
                                    read_loop, connection, receive, name=_READER_NAME
                                )
                            returned = await running
                            nursery.cancel_scope.cancel()  # only the reader or watcher is left
                finally:
                    # The handler is done, or failed: a message handed over from now on is not
                    # wanted (it would wait in the inbox for no one). Once: a cancel in trio
                    # records its reason, with a repr of the task.
                    connection.cancel()
        except BaseException as exc:  # sorted out right below
            failure = exc
        try:
            # (Nothing to sort out or close when the scope ended cleanly on a closed socket:
            # the common end, a client's close, spares itself the close table.)
            if failure is not None or not connection.phase.closed:
                await _finish(connection, ws, settings, failure, returned)
        finally:
            # Shielded: even when the server cancels us (its graceful timeout), cleanup such
            # as presence removal runs, under the hooks' own time limit.
            if settings.after_websocket:
                with trio.CancelScope(shield=True):
                    await _run_after_hooks(ws, settings)
    finally:
        registry.discard(connection, route)
    if connection.phase is Phase.CLOSED_BY_APP and connection.close_code is not None:
        await connection.drain_until_disconnect()
    if session_logger.isEnabledFor(logging.INFO):
        _log_session(connection, route, scope)


def _log_session(connection: Connection, route: Route, scope: Scope) -> None:
    """The session line: one INFO line on ``trioweb.session`` for a socket that was accepted
    (a denied handshake has its line in the access log), its fields also on the record for
    :class:`~trioweb.logs.JSONFormatter`."""
    if not connection.accepted or connection.denial_status is not None:
        return
    phase = connection.phase
    closed_by = (
        "server"
        if phase is Phase.CLOSED_BY_APP or phase is Phase.DONE or connection.closed_by_server
        else "client"
        if phase is Phase.CLOSED_BY_CLIENT
        else "none"
    )
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else "-"
    duration = trio.current_time() - connection.opened_at
    fields = {
        "route": route.path,
        "path": scope.get("path", "/"),
        "client": address,
        "closed_by": closed_by,
        "code": connection.close_code,
        "reason": connection.close_reason or "",
        "duration": round(duration, 3),
        "messages_in": connection.messages_in,
        "bytes_in": connection.bytes_in,
        "messages_out": connection.messages_out,
        "bytes_out": connection.bytes_out,
    }
    session_logger.info(
        "session %s path=%s client=%s closed_by=%s code=%s reason=%s duration=%.3fs "
        "in=%d/%dB out=%d/%dB",
        fields["route"],
        fields["path"],
        address,
        closed_by,
        "-" if connection.close_code is None else connection.close_code,
        json.dumps(fields["reason"], ensure_ascii=False),
        duration,
        connection.messages_in,
        connection.bytes_in,
        connection.messages_out,
        connection.bytes_out,
        extra={SESSION_FIELDS: fields},
    )


def _admit(
    host: Host, scope: Scope, receive: Receive, send: Send
) -> tuple[Connection, WebSocket, Route | tuple[int, bytes], WebSocketSettings]:
    """Route a handshake and check it against the limits: its route, or the denial it gets
    (status and body)."""
    found = host.router.match_websocket(scope.get("path", "/"))
    route = found.route
    settings = host.websocket_settings(route)
    connection = Connection(
        scope,
        receive,
        send,
        inbox_size=settings.inbox_size,
        max_message_size=settings.max_message_size,
        idle_timeout=settings.idle_timeout,
        compression=settings.compression,
        close_timeout=settings.close_timeout,
    )
    ws = WebSocket(connection, scope, cast(Any, host), found.params, settings.messages)
    # The two headers straight from the scope: ws.headers would keep a decoded copy of them all
    # for the socket's whole life (about a kilobyte), whether the app reads them or not.
    origin = _first_header(scope, b"origin")
    if origin is not None and settings.browser_denials == "close":
        # A browser's handshake (only browsers send Origin): its 4xx denials become closes.
        connection.denials_by_close = True
        offered = scope.get("subprotocols")
        connection.denial_subprotocol = offered[0] if offered else None
    if route is None:
        return connection, ws, (404, f"no WebSocket route for {ws.path}".encode()), settings
    registry = host.connections
    if registry.draining:
        return connection, ws, (503, b"server shutting down"), settings
    if origin is not None and not settings.origin_policy.allows(
        origin, _first_header(scope, b"host")
    ):
        return connection, ws, (403, f"origin not allowed: {origin}".encode()), settings
    if registry.full(route, settings.app_max_connections, settings.max_connections):
        return connection, ws, (503, b"too many connections, try again later"), settings
    return connection, ws, route, settings


def _first_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as ``Headers.get`` would give it."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _run_handler(
    connection: Connection, ws: WebSocket, route: Route, settings: WebSocketSettings
) -> Any:
    """Run the hooks and the handler; return what answered the handshake, if anything.

    As in Quart, a hook or handler may return a response (or anything a handler of an HTTP
    route may return) instead of accepting: it becomes the denial.
    """
    for hook in settings.before_websocket:
        returned = await hook(ws)
        if returned is not None and connection.phase is Phase.CONNECTING:
            return returned
        if connection.phase.closed:
            return None
    kwargs = dict(ws.path_params)
    if route.nursery_param is None:
        return await route.handler(ws, **kwargs)
    async with trio.open_nursery() as user_nursery:
        connection.user_scope = user_nursery.cancel_scope
        kwargs[route.nursery_param] = ConnectionNursery(user_nursery)
        returned = await route.handler(ws, **kwargs)
        connection.handler_returned()
    return returned


async def _finish(
    connection: Connection,
    ws: WebSocket,
    settings: WebSocketSettings,
    failure: BaseException | None,
    returned: Any,
) -> None:
    """Run the error handlers, then end the socket as the close table says."""
    errors, controls = sort_failure(failure, (WebSocketClose, HTTPException))
    denial: Response | None = None
    unhandled: list[Exception] = []
    for error in [*errors, *controls]:
        if isinstance(error, WebSocketClose):
            continue
        handled, response = await _call_errorhandler(settings, ws, error)
        if handled:
            denial = denial or response
        elif error in errors:
            unhandled.append(error)
    for error in unhandled:
        logger.error("unhandled error in WebSocket handler for %s", ws.path, exc_info=error)
    phase = connection.phase
    answered = errors or controls or returned is None  # what the handler returned is moot
    if phase is Phase.CONNECTING and denial is None and not answered:
        denial = _returned_response(returned, ws.path)
    given = None if denial is None else Deny(denial.status_code, denial.body, denial.headers.raw)
    decision = end_of_session(phase, errors, controls, given, connection.server_close)
    if isinstance(decision, Deny):
        await connection.deny(decision.status, decision.body, decision.headers)
    elif isinstance(decision, Close):
        await connection.close(decision.code, decision.reason)


def _returned_response(returned: Any, path: str) -> Response:
    """The denial a handler returned instead of accepting (a 500 if it is no response)."""
    try:
        return make_response(returned)
    except TypeError as exc:
        logger.error("WebSocket handler for %s returned an unusable value", path, exc_info=exc)
        return PlainTextResponse("Internal Server Error", 500)


async def _call_errorhandler(
    settings: WebSocketSettings, ws: WebSocket, error: Exception
) -> tuple[bool, Response | None]:
    """Run the app's error handler for ``error``, if any: (handled, the response it gave)."""
    handler = find_errorhandler(settings.errorhandlers, error)
    if handler is None:
        return False, None
    try:
        result = await handler(ws, error)
    except Exception:
        logger.exception("error handler %r failed while handling %r", handler, error)
        return False, None
    if result is None:
        return True, None
    try:
        return True, make_response(result)
    except TypeError as exc:
        # Handled, but with nothing usable to answer: the error stands (500 before accept,
        # 1011 after), and the handler's mistake is logged rather than raised out of the app.
        logger.error(
            "error handler %r returned an unusable value for %r", handler, error, exc_info=exc
        )
        return True, PlainTextResponse("Internal Server Error", 500)


async def _run_after_hooks(ws: WebSocket, settings: WebSocketSettings) -> None:
    with trio.move_on_after(settings.after_hook_timeout) as scope:
        for hook in settings.after_websocket:
            try:
                await hook(ws)
            except Exception:
                logger.exception("after_websocket hook %r failed for %s", hook, ws.path)
    if scope.cancelled_caught:
        logger.warning(
            "after_websocket hooks for %s ran past %.1f s and were cancelled",
            ws.path,
            settings.after_hook_timeout,
        )
