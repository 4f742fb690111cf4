"""The App: route table, hooks, lifespan and the ASGI entry point."""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import EllipsisType
from typing import Any, TypeVar

import trio

from . import _hypercorn_guard
from ._asyncapi import AsyncAPIMethods
from ._background import BackgroundFailurePolicy, BackgroundTasks
from ._client import client_handler
from ._deflate import Compression
from ._health import HealthMethods
from ._http_serving import HTTPHooks, serve_http
from ._lifespan import ALREADY_RUNNING, Extension, Lifecycle, LifeMethods
from ._metrics import Metrics, MetricsMethods
from ._origins import OriginPolicy
from ._registry import ConnectionRegistry
from ._session import asgi_entry
from ._settings import (
    FIXED_WHILE_SERVING,
    BrowserDenials,
    HTTPOptions,
    WebSocketDefaults,
    WebSocketOptions,
    WebSocketSettings,
    check_browser_denials,
    check_limits,
    resolve,
    websocket_options,
)
from ._startup import error_lines
from ._typed import DEFAULT_MAX_INVALID_MESSAGES, ErrorFrame, InvalidPolicy, check_policy
from ._types import DEFAULT_CLOSE_TIMEOUT, Receive, Scope, Send
from .http import DEFAULT_MAX_BODY_SIZE
from .logs import logging_config
from .routing import Route, Router
from .server import BackgroundTaskError, StartupError, serve

__all__ = ["ALREADY_RUNNING", "App"]

logger = logging.getLogger("trioweb")

F = TypeVar("F", bound=Callable[..., Any])
Lifespan = Callable[["App"], AbstractAsyncContextManager[Any]]


E = TypeVar("E", bound=Extension)

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: Compression unless the app says otherwise: on, without context takeover, so that a socket
#: holds no zlib state between messages (docs/security.md, "Compression").
DEFAULT_COMPRESSION = Compression()


class App(AsyncAPIMethods, LifeMethods, MetricsMethods, HealthMethods):
    """A trioweb application: an ASGI app to serve with :func:`trioweb.serve` or hypercorn.

    WebSocket limits, each also settable per route on :meth:`websocket`:

    - ``inbox_size``: messages a socket may have waiting unread (overflow: close 1008);
    - ``max_message_size``: bytes in one message (over it: close 1009);
    - ``max_connections``: open sockets (beyond it, handshakes get 503; ``None``: no limit);
    - ``idle_timeout``: seconds without a message from the client (then: close 1000
      "idle for more than N s");
    - ``allowed_origins``: the browser origins that may connect. ``None`` (the default) allows
      only pages of the host the handshake was sent to; a list names origins or patterns
      (``"https://*.example.com"``); ``["*"]`` allows any. Handshakes without ``Origin``
      (non-browser clients) are always allowed. Others get 403.

    ``browser_denials`` says how a browser learns that its handshake was refused with a 4xx
    status (also per route). Browsers hide the HTTP response of a refused handshake from the
    page, which sees close code 1006 as for a network failure. With ``"http"`` (the default)
    every client gets the HTTP response. With ``"close"``, a handshake that has an ``Origin``
    header (browsers always send one) is accepted and closed at once with code ``4000 +
    status`` (4401, 4403...) and the denial's text as the reason; other clients still get the
    HTTP response. 5xx denials stay HTTP responses.

    ``compression`` sets permessage-deflate (a :class:`~trioweb.Compression`, or ``None`` for
    off; also per route); ``close_timeout`` bounds the wait for a client's Close after the
    server sent its own, in seconds (then TCP is closed).

    Typed messages (``receives=``), also per route: ``invalid_messages="close"`` (the default;
    :class:`~trioweb.InvalidMessage`, 1007 if uncaught) or ``"reply"`` (an ``error_frame``
    to the sender); ``max_invalid_messages`` (10; ``None``: any) invalid ones later, 1008.

    ``max_body_size`` bounds HTTP request bodies (over it: 413); ``after_hook_timeout`` bounds
    the ``after_websocket`` hooks of one connection, in seconds. ``lifespan`` is a callable
    taking the app and returning an async context manager, entered at startup and exited at
    shutdown.

    ``background_failure`` says what a failing task in :attr:`nursery` does to the app. With
    ``"log"`` (the default) it is logged and counted (:attr:`background_failures`) and the app
    goes on serving. With ``"exit"`` it is logged and counted, then :func:`trioweb.serve`
    shuts the server down as on SIGTERM (open sockets closed with 1001) and raises
    :class:`~trioweb.server.BackgroundTaskError`: ``trioweb run`` exits with status 1.

    ``metrics=True`` serves Prometheus metrics at ``/metrics`` (a string: at that path), as
    :meth:`serve_metrics` does; :meth:`serve_health` adds liveness and readiness endpoints.
    """

    def __init__(
        self,
        *,
        lifespan: Lifespan | None = None,
        inbox_size: int = 128,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        allowed_origins: Iterable[str] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        after_hook_timeout: float = 5.0,
        compression: Compression | None = DEFAULT_COMPRESSION,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        background_failure: BackgroundFailurePolicy = "log",
        browser_denials: BrowserDenials = "http",
        invalid_messages: InvalidPolicy = "close",
        max_invalid_messages: int | None = DEFAULT_MAX_INVALID_MESSAGES,
        error_frame: ErrorFrame | None = None,
        metrics: bool | str = False,
    ) -> None:
        check_limits(inbox_size, max_message_size, max_connections, idle_timeout)
        check_browser_denials(browser_denials)
        check_policy(invalid_messages, max_invalid_messages)
        # Before any setting: __setattr__ reads it.
        self._settings: dict[Route | None, WebSocketSettings] | None = None
        #: The route table.
        self.router = Router()
        #: Default bound of each socket's inbox, in messages.
        self.inbox_size = inbox_size
        #: Default limit of one WebSocket message, in bytes.
        self.max_message_size = max_message_size
        #: Limit of open WebSockets for the whole app (``None``: no limit).
        self.max_connections = max_connections
        #: Default idle timeout of a WebSocket, in seconds (``None``: none).
        self.idle_timeout = idle_timeout
        #: Which browser origins may open a WebSocket.
        self.origin_policy = OriginPolicy(allowed_origins)
        #: Default limit of an HTTP request body, in bytes.
        self.max_body_size = max_body_size
        #: Time limit of one connection's ``after_websocket`` hooks, in seconds.
        self.after_hook_timeout = after_hook_timeout
        #: Default permessage-deflate settings of a WebSocket (``None``: off).
        self.compression = compression
        if close_timeout <= 0:
            raise ValueError(f"close_timeout must be positive, not {close_timeout}")
        #: Seconds the server waits for a client's Close after sending its own, in seconds.
        self.close_timeout = close_timeout
        #: How a 4xx denial reaches a browser: ``"http"`` or ``"close"`` (see :class:`App`).
        self.browser_denials = browser_denials
        #: What a message that fails to decode or validate does: ``"close"`` or ``"reply"``.
        self.invalid_messages: InvalidPolicy = invalid_messages
        #: Invalid messages a socket may send before it is closed with 1008 (``None``: any).
        self.max_invalid_messages = max_invalid_messages
        #: Makes the frame sent back for an invalid message under ``"reply"`` (``None``: the
        #: default, ``{"type": "error", "code": "bad_message", "detail": ...}``).
        self.error_frame = error_frame
        #: The ``info`` of the app's AsyncAPI document (see :meth:`serve_asyncapi`).
        self.asyncapi_info: dict[str, str] = {"title": "trioweb app", "version": "0.1.0"}
        self._before_websocket: list[Callable[[Any], Awaitable[Any]]] = []
        self._after_websocket: list[Callable[[Any], Awaitable[Any]]] = []
        self._errorhandlers: dict[type[BaseException], Callable[[Any, Any], Awaitable[Any]]] = {}
        #: The hooks and error handlers around every HTTP handler.
        self.http_hooks = HTTPHooks(errorhandlers=self._errorhandlers)
        #: The open WebSockets, for the limits and the drain at shutdown.
        self.connections = ConnectionRegistry()
        #: The app's life: startup, serving, shutdown (what ``serve()`` watches).
        self.lifecycle = Lifecycle(
            BackgroundTasks(background_failure),
            on_begin=self._begin,
            on_serving=self._fix_settings,
            on_stopped=self._release_settings,
        )
        self.lifecycle.context = lifespan
        #: The app's Prometheus metrics, once turned on (``None``: off, the default).
        self.metrics: Metrics | None = None
        if metrics:
            self.serve_metrics("/metrics" if metrics is True else metrics)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in FIXED_WHILE_SERVING and getattr(self, "_settings", None) is not None:
            raise RuntimeError(
                f"App.{name} cannot change while the app is serving: set it in App(...) or on "
                "the route, before the app starts"
            )
        super().__setattr__(name, value)

    # -- routes -------------------------------------------------------------------------

    def websocket(
        self,
        path: str,
        *,
        inbox_size: int | None = None,
        max_message_size: int | None = None,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        allowed_origins: Iterable[str] | None = None,
        compression: Compression | EllipsisType | None = ...,
        browser_denials: BrowserDenials | None = None,
        receives: Any = None,
        sends: Any = None,
        invalid_messages: InvalidPolicy | None = None,
        max_invalid_messages: int | EllipsisType | None = ...,
        error_frame: ErrorFrame | None = None,
    ) -> Callable[[F], F]:
        """Register a WebSocket handler for ``path``.

        The handler takes the :class:`~trioweb.WebSocket` first, then any path parameters by
        name, and, if it has a parameter named ``nursery`` or annotated ``trio.Nursery``, the
        connection's nursery. The keywords override the app's limits for this route (see
        :class:`App`); ``max_connections`` here counts this route's sockets only,
        ``compression=None`` turns compression off for this route, and ``browser_denials``
        (``"http"`` or ``"close"``) says how this route's 4xx denials reach browsers.

        ``receives`` is what :meth:`~trioweb.WebSocket.iter_typed` decodes as (a Struct, a
        tagged union of them, a dataclass, a TypedDict), ``sends`` what
        :meth:`~trioweb.WebSocket.send_typed` may send: compiled here, once (see docs/typed.md).
        """
        check_limits(inbox_size, max_message_size, max_connections, idle_timeout)
        if browser_denials is not None:
            check_browser_denials(browser_denials)
        options = websocket_options(
            path,
            inbox_size=inbox_size,
            max_message_size=max_message_size,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            origin_policy=None if allowed_origins is None else OriginPolicy(allowed_origins),
            compression=compression,
            browser_denials=browser_denials,
            receives=receives,
            sends=sends,
            invalid_messages=invalid_messages,
            max_invalid_messages=max_invalid_messages,
            error_frame=error_frame,
        )

        def register(handler: F) -> F:
            self.router.add(Route(path, handler, None, options))
            return handler

        return register

    def route(
        self,
        path: str,
        methods: Iterable[str] = ("GET",),
        *,
        max_body_size: int | None = None,
    ) -> Callable[[F], F]:
        """Register an HTTP handler for ``path`` and ``methods`` (GET also answers HEAD)."""
        wanted = {method.upper() for method in methods}
        if unknown := wanted - set(HTTP_METHODS):
            raise ValueError(f"unknown HTTP method(s): {', '.join(sorted(unknown))}")
        if "GET" in wanted:
            wanted.add("HEAD")

        def register(handler: F) -> F:
            options = HTTPOptions(max_body_size=max_body_size)
            self.router.add(Route(path, handler, frozenset(wanted), options))
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[F], F]:
        """Register a GET (and HEAD) handler."""
        return self.route(path, ["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[F], F]:
        """Register a POST handler."""
        return self.route(path, ["POST"], **options)

    def put(self, path: str, **options: Any) -> Callable[[F], F]:
        """Register a PUT handler."""
        return self.route(path, ["PUT"], **options)

    def patch(self, path: str, **options: Any) -> Callable[[F], F]:
        """Register a PATCH handler."""
        return self.route(path, ["PATCH"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[F], F]:
        """Register a DELETE handler."""
        return self.route(path, ["DELETE"], **options)

    def serve_client(self, path: str = "/trioweb.js") -> None:
        """Serve trioweb's browser client, an ES module, at ``path`` (GET and HEAD).

        Pages import it with ``import { connect } from "/trioweb.js"``; see the browser client
        reference in the docs. It is answered from memory as ``text/javascript;
        charset=utf-8``, with an ``ETag`` and ``Cache-Control: no-cache``: browsers revalidate
        it on each load and get a 304 until trioweb is upgraded. ``before_request`` hooks run
        for it as for any route.
        """
        self.router.add(Route(path, client_handler(), frozenset({"GET", "HEAD"}), HTTPOptions()))

    # -- hooks --------------------------------------------------------------------------

    def before_websocket(self, hook: F) -> F:
        """Run ``hook(ws)`` before every WebSocket handler; it may ``abort()`` or accept."""
        self._check_not_serving("before_websocket")
        self._before_websocket.append(hook)
        return hook

    def after_websocket(self, hook: F) -> F:
        """Run ``hook(ws)`` after every connection has ended, with ``ws.close_code`` set."""
        self._check_not_serving("after_websocket")
        self._after_websocket.append(hook)
        return hook

    def before_request(self, hook: F) -> F:
        """Run ``hook(request)`` before every HTTP handler; a returned response short-cuts it."""
        self.http_hooks.before_request.append(hook)
        return hook

    def after_request(self, hook: F) -> F:
        """Run ``hook(request, response)`` after every HTTP handler; it may return a new one."""
        self.http_hooks.after_request.append(hook)
        return hook

    def errorhandler(self, exc_type: type[BaseException]) -> Callable[[F], F]:
        """Handle ``exc_type`` (and subclasses) raised by HTTP or WebSocket handlers.

        The handler is called as ``handler(request_or_ws, exc)``. For HTTP, what it returns is
        the response. For a WebSocket it may return a response (sent as the denial if the
        handshake is not accepted yet) or close the socket itself; a handled error is not
        logged, and a socket it leaves open closes as the error calls for (1011, 1008).
        """

        def register(handler: F) -> F:
            self._check_not_serving("errorhandler")
            self._errorhandlers[exc_type] = handler
            return handler

        return register

    # -- settings -----------------------------------------------------------------------

    def largest_message_size(self) -> int:
        """The largest message any route accepts: the server's own ceiling must allow it."""
        sizes = [
            r.options.max_message_size or 0
            for r in self.router.routes
            if isinstance(r.options, WebSocketOptions)
        ]
        return max([self.max_message_size, *sizes])

    def websocket_settings(self, route: Route | None) -> WebSocketSettings:
        """The settings a WebSocket of ``route`` runs with: the route's own over the app's.

        Resolved once when the app starts serving, and fixed until it stops.
        """
        settings = self._settings
        if settings is None:
            return self._resolve(route)
        try:
            return settings[route]
        except KeyError:  # a route added while serving
            settings[route] = resolved = self._resolve(route)
            return resolved

    def _resolve(self, route: Route | None) -> WebSocketSettings:
        defaults = WebSocketDefaults(
            inbox_size=self.inbox_size,
            max_message_size=self.max_message_size,
            max_connections=self.max_connections,
            idle_timeout=self.idle_timeout,
            origin_policy=self.origin_policy,
            compression=self.compression,
            close_timeout=self.close_timeout,
            after_hook_timeout=self.after_hook_timeout,
            browser_denials=self.browser_denials,
            invalid_messages=self.invalid_messages,
            max_invalid_messages=self.max_invalid_messages,
            error_frame=self.error_frame,
        )
        options = route.options if route is not None else None
        return resolve(
            defaults,
            options if isinstance(options, WebSocketOptions) else None,
            before_websocket=tuple(self._before_websocket),
            after_websocket=tuple(self._after_websocket),
            errorhandlers=self._errorhandlers,
        )

    def _begin(self) -> None:
        self.connections.reset()
        # Under the plain `hypercorn` command too, not only under serve(): the changes apply to
        # the connections hypercorn accepts from here on (docs/hypercorn.md). Idempotent.
        _hypercorn_guard.install()

    def _fix_settings(self) -> None:
        self._settings = {}

    def _release_settings(self) -> None:
        self._settings = None

    def _check_not_serving(self, what: str) -> None:
        if self._settings is not None:
            raise RuntimeError(
                f"app.{what} cannot be registered while the app is serving: register it before"
                " the app starts"
            )

    # -- lifespan -----------------------------------------------------------------------

    async def serve_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app for the lifespan scope (``App.__call__`` sends it there)."""
        await self.lifecycle.run(self, receive, send)

    # -- HTTP ---------------------------------------------------------------------------

    async def serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app for HTTP scopes (``App.__call__`` sends them here)."""
        await serve_http(self, self.http_hooks, scope, receive, send)

    # -- ASGI ---------------------------------------------------------------------------

    #: The ASGI 3 entry point. It is the WebSocket session itself (``_session.py``), which
    #: runs in this one frame: that frame is under every step of every handler.
    __call__ = asgi_entry

    def run(
        self, host: str = "127.0.0.1", port: int = 8000, *, traceback: bool = False, **options: Any
    ) -> None:
        """Serve the app until SIGINT or SIGTERM (see :func:`trioweb.serve` for ``options``).

        trioweb's own lines (one per session, the drain) go to stderr as under ``trioweb run``,
        unless the program has configured logging already (then they go where it says). A
        server that cannot start (or a background task failing under ``"exit"``) is one line on
        stderr and ``SystemExit(1)``, as under ``trioweb run``; ``traceback=True`` adds the
        cause's traceback (``--traceback``). :func:`trioweb.serve` raises the error instead.
        """
        if not logging.getLogger().handlers and not logging.getLogger("trioweb").handlers:
            logging.config.dictConfig(logging_config())
        try:
            trio.run(partial(serve, self, host, port, **options))
        except (StartupError, BackgroundTaskError) as exc:  # a person's error: no traceback
            sys.stderr.write(error_lines(exc, traceback))
            raise SystemExit(1) from exc
