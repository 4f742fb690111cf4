"""The nursery a WebSocket handler receives: the connection's, with one rule added.

A task that touches a socket the app has already closed gets ``WebSocketDisconnect``. In a plain
trio nursery, that exception would cancel every sibling, including the handler's own code after
its ``close()``. Here it ends just that task, quietly: the socket is closed, the task has
nothing left to do. Every other exception behaves as in any trio nursery.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .exceptions import WebSocketDisconnect

__all__ = ["ConnectionNursery"]


async def _quiet_on_disconnect(async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    with contextlib.suppress(WebSocketDisconnect):  # the socket is closed: this task is done
        await async_fn(*args)


class _WatchedStatus:
    """A ``task_status`` that remembers whether the task reported itself started."""

    __slots__ = ("_inner", "started_called")

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.started_called = False

    def started(self, value: Any = None) -> None:
        self.started_called = True
        self._inner.started(value)


async def _quiet_after_start(
    async_fn: Callable[..., Awaitable[Any]], *args: Any, task_status: trio.TaskStatus[Any]
) -> None:
    status = _WatchedStatus(task_status)
    try:
        await async_fn(*args, task_status=status)
    except WebSocketDisconnect:
        if not status.started_called:
            raise  # start() must learn why the task never started


class ConnectionNursery:
    """The connection's nursery, as a handler receives it (annotate it ``trio.Nursery``).

    ``start_soon``, ``start`` and ``cancel_scope`` work as on a ``trio.Nursery``; a task ended by
    an uncaught ``WebSocketDisconnect`` ends quietly without cancelling its siblings.
    """

    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def __repr__(self) -> str:
        return f"<ConnectionNursery of {self._nursery!r}>"

    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``async_fn(*args)`` as a task of the connection."""
        self._nursery.start_soon(_quiet_on_disconnect, async_fn, *args, name=name or async_fn)

    async def start(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Start ``async_fn(*args, task_status=...)`` and wait until it reports started."""
        return await self._nursery.start(_quiet_after_start, async_fn, *args, name=name or async_fn)

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The nursery's cancel scope: cancelling it ends every task of the handler."""
        return self._nursery.cancel_scope

    @property
    def child_tasks(self) -> frozenset[trio.lowlevel.Task]:
        """The tasks currently running in this nursery."""
        return self._nursery.child_tasks

    @property
    def parent_task(self) -> trio.lowlevel.Task:
        """The task that opened this nursery."""
        return self._nursery.parent_task
