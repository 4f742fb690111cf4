"""Starting a server: bind first, and a failed start is one error, never announced as running.

Two orders of hypercorn's trio worker that ``serve()`` changes (docs/deployment.md, "When it
cannot start"):

- hypercorn runs the app's startup *before* it binds: a port in use would be found only after
  the app had connected to its brokers and run its hooks. :func:`bind` creates the listening
  sockets (and loads the TLS files) first, and names what failed in one line.
- When the startup fails, hypercorn's lifespan task sets "startup done" in a ``finally`` and its
  main task, woken, binds and logs "Running on http://..." before the failure reaches it (the
  failure only cancels it a scheduling round later). :class:`StartupGuard` sees the app's
  ``lifespan.startup.failed`` on its way to hypercorn and cancels the server at once instead:
  hypercorn's main task is still parked in its startup wait and never gets to bind or log.
"""

from __future__ import annotations

import errno
import socket
import traceback
from typing import Any

import trio
from hypercorn.config import Config, Sockets

from ._types import Message, Receive, Scope, Send

__all__ = [
    "StartupError",
    "StartupGuard",
    "address_error",
    "bind",
    "close_sockets",
    "error_lines",
]


class StartupError(RuntimeError):
    """The server could not start: its address, its TLS files, or the app's startup (a startup
    hook, an extension such as a hub whose broker is unreachable, or the lifespan context
    manager raised).

    The message says what failed, in one line; ``__cause__`` is the original error, with its
    traceback. Nothing was announced as running.
    """


def error_lines(exc: BaseException, with_traceback: bool) -> str:
    """``trioweb: error: ...`` in one line, as ``trioweb run`` and ``App.run()`` print a server
    that cannot start; then, if asked, the traceback of what caused it."""
    text = f"trioweb: error: {exc}\n"
    if with_traceback and exc.__cause__ is not None:
        text += "".join(traceback.format_exception(exc.__cause__))
    return text


def address_error(binds: list[str], exc: BaseException) -> str:
    """One line on why the server cannot listen on ``binds`` (``host:port`` strings)."""
    where = ", ".join(binds)
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return f"cannot serve on {where}: the port is already in use"
    if code == errno.EACCES:
        return f"cannot serve on {where}: permission denied (ports below 1024 need root)"
    if isinstance(exc, socket.gaierror):
        return f"cannot serve on {where}: cannot resolve the host ({exc.strerror})"
    return f"cannot serve on {where}: {getattr(exc, 'strerror', None) or exc}"


def close_sockets(sockets: Sockets) -> None:
    """Close every socket of ``sockets`` (closing one trio already closed does nothing)."""
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]:
        sock.close()


def bind(config: Config) -> Sockets:
    """Create and listen on the sockets of ``config``, and check its TLS files load.

    Raises :class:`StartupError` with one line naming the address or the file; the caller owns
    the sockets (hypercorn closes them once it serves; :func:`close_sockets` otherwise).
    """
    try:
        sockets = config.create_sockets()
    except (OSError, OverflowError, ValueError) as exc:  # OverflowError: a port over 65535
        raise StartupError(address_error(config.bind, exc)) from exc
    try:
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.listen(config.backlog)
    except OSError as exc:
        close_sockets(sockets)
        raise StartupError(address_error(config.bind, exc)) from exc
    try:
        config.create_ssl_context()  # None without TLS; hypercorn makes its own again later
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        close_sockets(sockets)
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise StartupError(
            f"cannot load the TLS certificate {config.certfile} (key {config.keyfile}): {reason}"
        ) from exc
    return sockets


class StartupGuard:
    """The app as hypercorn sees it under ``serve()``: everything passes through, but the
    app's ``lifespan.startup.failed`` cancels ``scope`` (the server) instead of reaching
    hypercorn, and :attr:`failure` keeps its message for ``serve()`` to raise."""

    def __init__(self, app: Any, cancel_scope: trio.CancelScope) -> None:
        self._app = app
        self._cancel_scope = cancel_scope
        #: The message of the app's ``lifespan.startup.failed``, if it sent one.
        self.failure: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: the app's own, with the lifespan's ``send`` watched."""
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.failure = str(message.get("message", ""))
                self._cancel_scope.cancel()
                await trio.sleep_forever()  # cancelled at once: hypercorn never hears of it
            await send(message)

        await self._app(scope, receive, lifespan_send)
