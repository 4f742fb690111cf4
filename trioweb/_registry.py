"""The app's live connections: the limits on how many, and the drain at shutdown."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any, Protocol

import trio

from ._connection import SHUTDOWN_CLOSE, Connection

__all__ = ["ConnectionRegistry", "SessionObserver"]

logger = logging.getLogger("trioweb")


class SessionObserver(Protocol):
    """Told of every session's start and end, and of every refused handshake (the metrics).

    Called once per session, never per message: what happens in between it reads from the
    connection's own counts.
    """

    def opened(self, connection: Connection, route: Any) -> None:
        """``connection`` was admitted to ``route``; its handler starts."""
        ...

    def closed(self, connection: Connection, route: Any) -> None:
        """``connection`` has ended: closed (or denied by a hook or handler), hooks run."""
        ...

    def refused(self, route: Any, status: int) -> None:
        """A handshake was denied with ``status`` before any handler ran (``route``: the
        route it named, ``None`` if none matched)."""
        ...


class ConnectionRegistry:
    """The app's live connections, so that a graceful shutdown can close every one of them.

    Connections are counted per route too: ``route`` is any hashable that names it.
    """

    def __init__(self) -> None:
        self._live: set[Connection] = set()
        self._per_route: dict[Hashable, int] = {}
        #: True from the start of a shutdown: new handshakes are refused with 503.
        self.draining = False
        self._empty = trio.Event()
        #: Told of each session's start and end (``None``: nobody, the default).
        self.observer: SessionObserver | None = None

    def __len__(self) -> int:
        return len(self._live)

    def full(self, route: Hashable, app_limit: int | None, route_limit: int | None) -> bool:
        """Whether one more connection would go over the app's or the route's limit."""
        if app_limit is not None and len(self._live) >= app_limit:
            return True
        return route_limit is not None and self._per_route.get(route, 0) >= route_limit

    def add(self, connection: Connection, route: Hashable) -> None:
        """Track ``connection``; shut it down at once if the app is already draining."""
        self._live.add(connection)
        self._per_route[route] = self._per_route.get(route, 0) + 1
        if self._empty.is_set():
            self._empty = trio.Event()
        if self.draining:
            connection.shut_down(*SHUTDOWN_CLOSE)
        if self.observer is not None:
            self.observer.opened(connection, route)

    def discard(self, connection: Connection, route: Hashable) -> None:
        """Forget ``connection``: its close is sent and its after hooks have run."""
        if connection in self._live:
            self._live.discard(connection)
            remaining = self._per_route[route] - 1
            if remaining:
                self._per_route[route] = remaining
            else:
                del self._per_route[route]
            if self.observer is not None:
                self.observer.closed(connection, route)
        if not self._live:
            self._empty.set()

    def reset(self) -> None:
        """Start a new serving life (a new lifespan): accept handshakes again."""
        self.draining = False
        self._empty = trio.Event()

    async def shut_down_all(self, grace: float) -> None:
        """Close every connection with 1001; wait up to ``grace`` seconds for all to finish."""
        self.draining = True
        for connection in list(self._live):
            connection.shut_down(*SHUTDOWN_CLOSE)
        if not self._live:
            return
        with trio.move_on_after(grace):
            await self._empty.wait()
        if self._live:
            logger.warning(
                "%d WebSocket connection(s) still open %.1f s after shutdown began",
                len(self._live),
                grace,
            )
