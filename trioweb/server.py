"""serve(): the app on hypercorn's trio worker, with a graceful drain on shutdown.

hypercorn alone sends no close frames on shutdown: after its graceful timeout it cancels the
apps and clients see 1006. So trioweb owns the shutdown trigger. When SIGINT, SIGTERM or the
caller's own trigger fires, new handshakes are refused with 503, every open socket is closed
with 1001 "server shutting down", and only once they are all done (or ``drain_timeout`` has
passed) is hypercorn told to stop listening and run its own graceful timeout.

The same drain runs when a background task fails in an ``App(background_failure="exit")``;
then ``serve()`` raises :class:`BackgroundTaskError` once the server has stopped.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import LifespanFailureError, LifespanTimeoutError, wrap_app

from . import _hypercorn_guard
from ._failures import leaves
from ._lifespan import ALREADY_RUNNING
from ._startup import StartupError, StartupGuard, bind, close_sockets

if TYPE_CHECKING:
    from .app import App

__all__ = ["BackgroundTaskError", "StartupError", "serve"]

logger = logging.getLogger("trioweb")


class BackgroundTaskError(RuntimeError):
    """A task in ``app.nursery`` failed and the app has ``background_failure="exit"``.

    :func:`serve` raises it once the server has shut down (open sockets closed with 1001,
    the lifespan ended). The traceback was logged on logger ``trioweb`` when the task failed;
    the message names the error (the first one, if several tasks failed).
    """


DEFAULT_PING_INTERVAL = 20.0
"""Seconds between server pings unless ``serve(ping_interval=...)`` or ``--ping-interval``
say otherwise; a peer silent for ``dead_peer_timeout(DEFAULT_PING_INTERVAL)`` (40 s) is dropped."""


def dead_peer_timeout(ping_interval: float) -> float:
    """At most how long after a WebSocket peer's last byte trioweb's stream drops it, with
    pings every ``ping_interval`` seconds: two intervals (an interval after a Ping that
    brought nothing back)."""
    return ping_interval * 2


def make_config(
    host: str,
    port: int,
    *,
    graceful_timeout: float,
    ping_interval: float | None,
    options: dict[str, Any],
) -> Config:
    """A hypercorn ``Config`` for ``host:port``; ``options`` set any other Config attribute."""
    config = Config()
    config.bind = [
        f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    ]
    config.graceful_timeout = graceful_timeout
    if ping_interval is not None and not ping_interval >= 0:
        raise ValueError(f"ping_interval must be positive, 0 or None, not {ping_interval}")
    if ping_interval:  # None or 0: no pings
        # trioweb's stream drops a peer that answers no ping for an interval (hypercorn's never
        # checks Pongs, and its read timeout would cut slow HTTP downloads too).
        config.websocket_ping_interval = ping_interval
    for name, value in options.items():
        if not hasattr(Config, name):
            raise TypeError(f"serve() got an unknown option {name!r} (not a hypercorn setting)")
        setattr(config, name, value)
    return config


async def _next_signal(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        logger.info("received %s", signal.Signals(signum).name)
        return


async def _background_failure(app: App) -> None:
    await app.lifecycle.background.wait_for_failure()
    logger.error("a background task failed and the app has background_failure='exit': stopping")


async def _first_of(*waiters: Callable[[], Awaitable[Any]]) -> None:
    """Return as soon as any of ``waiters`` returns (never, if there are none)."""
    async with trio.open_nursery() as nursery:

        async def wait_then_stop(waiter: Callable[[], Awaitable[Any]]) -> None:
            await waiter()
            nursery.cancel_scope.cancel()

        for waiter in waiters:
            nursery.start_soon(wait_then_stop, waiter)
        await trio.sleep_forever()


async def serve(
    app: App,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    graceful_timeout: float = 10.0,
    drain_timeout: float | None = None,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``app`` on hypercorn's trio worker until SIGINT/SIGTERM or ``shutdown_trigger``.

    ``port=0`` picks a free port; started with ``nursery.start(serve, app, ...)``, this reports
    the URLs it listens on (``["http://127.0.0.1:54321"]``). On shutdown, open sockets get close
    1001 and up to ``drain_timeout`` seconds (default: ``graceful_timeout``) to finish; then
    hypercorn stops listening and cancels whatever is left after ``graceful_timeout``.
    ``ping_interval`` (20 s by default; ``None`` or 0 turns it off) sends WebSocket pings and
    drops a peer that answers none, within two intervals of its last byte (40 s by default: a
    peer that vanished without a FIN); its handler is cancelled. Any other keyword sets the
    hypercorn ``Config`` attribute of that name.

    When the server cannot start (the address, the TLS files, the app's startup), ``serve()``
    raises :class:`StartupError`, one line naming what failed, chained to the error; the
    address and TLS files are checked before the app's startup runs, and nothing says the
    server runs (hypercorn's "Running on ..." is never logged).

    For an ``App(background_failure="exit")``, a failing task in ``app.nursery`` starts the
    same shutdown, and ``serve()`` then raises :class:`BackgroundTaskError` (it also does
    if a background task failed while the server was stopping for another reason).
    """
    if app.lifecycle.active:
        raise RuntimeError(ALREADY_RUNNING)
    # trioweb's WebSocket stream, and one HTTP/2 frame must not stop the server (docs/hypercorn.md)
    _hypercorn_guard.install()
    # The stream takes each route's limit from its accept; hypercorn's own setting is only the
    # ceiling for an app that does not send one: the largest any route allows.
    options.setdefault("websocket_max_message_size", app.largest_message_size())
    config = make_config(
        host, port, graceful_timeout=graceful_timeout, ping_interval=ping_interval, options=options
    )
    drain = graceful_timeout if drain_timeout is None else drain_timeout
    # Listen before the app's startup: a port in use is one line at once, not after the app
    # has connected to its brokers (hypercorn's own order is the reverse).
    sockets = bind(config)
    # A failed startup is raised below, chained to its error: no traceback in the log too.
    app.lifecycle.log_startup_failure = False
    try:
        await _serve_bound(
            app, config, sockets, drain, shutdown_trigger, handle_signals, task_status
        )
    finally:
        app.lifecycle.log_startup_failure = True
        close_sockets(sockets)  # if hypercorn never took them (it closes those it serves)


async def _serve_bound(
    app: App,
    config: Config,
    sockets: Sockets,
    drain: float,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    handle_signals: bool,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """The body of :func:`serve`, once its sockets listen."""
    with contextlib.ExitStack() as stack:
        waiters: list[Callable[[], Awaitable[Any]]] = []
        if shutdown_trigger is not None:
            waiters.append(shutdown_trigger)
        if app.background_failure == "exit":
            waiters.append(partial(_background_failure, app))
        second_signal: list[Callable[[], Awaitable[Any]]] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            # Listen from the start: a signal during startup then stops the server cleanly
            # once it is up, instead of killing the process.
            signals = stack.enter_context(trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
            waiters.append(partial(_next_signal, signals))
            second_signal.append(partial(_next_signal, signals))

        async def drain_then_stop() -> None:
            await _first_of(*waiters)
            count = len(app.connections)
            logger.info("shutting down: closing %d WebSocket(s) with 1001", count)
            began = trio.current_time()
            # A second signal stops waiting for the handlers; the graceful timeout still applies.
            await _first_of(partial(app.connections.shut_down_all, drain), *second_signal)
            # The summary: one line per process (with --workers, each worker's, with its pid).
            logger.info(
                "drained in %.2f s: %d WebSocket(s) closed, %d still open",
                trio.current_time() - began,
                count - min(count, len(app.connections)),
                len(app.connections),
            )

        cancel_scope = trio.CancelScope()
        guard = StartupGuard(app, cancel_scope)
        framework: Any = guard  # hypercorn's Framework type is a union it satisfies at runtime
        hypercorn_app = wrap_app(framework, config.wsgi_max_body_size, None)
        up = False
        try:
            with cancel_scope:
                async with trio.open_nursery() as nursery:
                    urls = await nursery.start(
                        partial(
                            worker_serve,
                            hypercorn_app,
                            config,
                            sockets=sockets,
                            shutdown_trigger=drain_then_stop,
                        )
                    )
                    up = True
                    task_status.started(urls)
        except BaseExceptionGroup as group:
            slow, others = group.split(LifespanTimeoutError)
            if slow is not None and others is None and not up:  # a startup hook that hangs
                raise StartupError(
                    f"app startup failed: not done after {config.startup_timeout:g} s "
                    "(hypercorn's startup_timeout)"
                ) from next(leaves(slow))
            failed, rest = group.split(LifespanFailureError)
            if failed is None or rest is not None:
                raise
            # The lifespan reported a failed shutdown: a failing background task says it
            # below; anything else (a shutdown hook) goes on as it is.
            if _fatal_background_failure(app) is None:
                raise
        if guard.failure is not None:
            raise StartupError(
                f"app startup failed: {guard.failure}"
            ) from app.lifecycle.startup_error
        if (fatal := _fatal_background_failure(app)) is not None:
            raise BackgroundTaskError(fatal)


def _fatal_background_failure(app: App) -> str | None:
    """What failed in ``app.nursery``, if that must stop the server; else ``None``."""
    if app.background_failure != "exit":
        return None
    return app.lifecycle.background.summary()
