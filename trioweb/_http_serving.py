"""Serving one HTTP request: routing, the hooks around the handler, the error handlers.

The app's HTTP side as plain functions over what they need: the route table and the body limit
(an :class:`HTTPHost`, which ``App`` is) and the hooks (:class:`HTTPHooks`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from ._failures import sort_failure
from ._settings import ErrorHandler, HTTPOptions, find_errorhandler
from ._types import Receive, Scope, Send
from .exceptions import HTTPException
from .http import (
    ClientDisconnect,
    PlainTextResponse,
    Request,
    Response,
    make_response,
    send_http_response,
)
from .routing import Router

__all__ = ["HTTPHooks", "HTTPHost", "serve_http"]

logger = logging.getLogger("trioweb")


class HTTPHost(Protocol):
    """What serving a request needs of the app (``App`` is one)."""

    #: The route table.
    router: Router
    #: The default limit of a request body, in bytes.
    max_body_size: int


@dataclass
class HTTPHooks:
    """The hooks around every HTTP handler, and the error handlers."""

    before_request: list[Callable[[Request], Awaitable[Any]]] = field(default_factory=list)
    after_request: list[Callable[[Request, Response], Awaitable[Any]]] = field(default_factory=list)
    errorhandlers: dict[type[BaseException], ErrorHandler] = field(default_factory=dict)


async def serve_http(
    host: HTTPHost, hooks: HTTPHooks, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer one HTTP request."""
    method = str(scope.get("method", "GET")).upper()
    path = str(scope.get("path", "/"))
    request = Request(scope, receive, cast(Any, host), max_body_size=host.max_body_size)
    try:
        response = await _respond(host, hooks, request, method, path)
    except ClientDisconnect:
        return
    for hook in hooks.after_request:
        try:
            replaced = await hook(request, response)
            if replaced is not None:  # what it returned must convert, as a handler's must
                response = make_response(replaced)
        except Exception:
            logger.exception("after_request hook %r failed for %s %s", hook, method, path)
            response = PlainTextResponse("Internal Server Error", 500)
    await send_http_response(send, response, scope)


async def _respond(
    host: HTTPHost, hooks: HTTPHooks, request: Request, method: str, path: str
) -> Response:
    try:
        found = host.router.match_http(path, method)
        if found.route is not None:
            request.path_params = found.params
            options = found.route.options
            limit = options.max_body_size if isinstance(options, HTTPOptions) else None
            request.max_body_size = limit or host.max_body_size
        # Hooks run before a routing miss is answered, as in Flask and Quart: an auth hook
        # answers 401 for paths that do not exist as well.
        for hook in hooks.before_request:
            if (early := await hook(request)) is not None:
                return make_response(early)
        if found.route is None:
            if found.allowed:
                allow = ", ".join(sorted(found.allowed))
                raise HTTPException(405, f"{method} not allowed on {path}", {"allow": allow})
            raise HTTPException(404, f"no route for {path}")
        return make_response(await found.route.handler(request, **found.params))
    except BaseException as failure:  # sorted out right below
        return await _error_response(hooks, request, failure)


async def _error_response(hooks: HTTPHooks, request: Request, failure: BaseException) -> Response:
    errors, controls = sort_failure(failure, (HTTPException, ClientDisconnect))
    if any(isinstance(c, ClientDisconnect) for c in controls) and not errors:
        raise ClientDisconnect()
    # Every error without a handler is logged, even when another one of the same group is
    # handled and answers the request.
    for error in errors:
        if find_errorhandler(hooks.errorhandlers, error) is None:
            logger.error(
                "unhandled error in HTTP handler for %s %s",
                request.method,
                request.path,
                exc_info=error,
            )
    for error in [*errors, *controls]:
        handler = find_errorhandler(hooks.errorhandlers, error)
        if handler is not None:
            try:
                return make_response(await handler(request, error))
            except Exception:
                logger.exception("error handler %r failed while handling %r", handler, error)
                return PlainTextResponse("Internal Server Error", 500)
    if errors:
        return PlainTextResponse("Internal Server Error", 500)
    http = next(c for c in controls if isinstance(c, HTTPException))
    return PlainTextResponse(http.detail, http.status_code, http.headers)
