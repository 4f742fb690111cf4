"""The nurseries users hold: a connection's, and the app's, each with one rule added.

:class:`ConnectionNursery`, the one a WebSocket handler receives: a task that touches a socket
the app has already closed gets ``WebSocketDisconnect``. In a plain trio nursery, that exception
would cancel every sibling, including the handler's own code after its ``close()``. Here it ends
just that task, quietly: the socket is closed, the task has nothing left to do. Every other
exception behaves as in any trio nursery.

:class:`AppNursery`, ``app.nursery``: a task that fails is reported (logged and counted by the
app) and ends alone. In a plain trio nursery it would cancel every other background task and
close the nursery to new tasks for the rest of the app's life, while the server went on
serving as if nothing had happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import trio

from .exceptions import WebSocketDisconnect

__all__ = ["AppNursery", "ConnectionNursery"]


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


class _NurseryView:
    """What both of trioweb's nurseries pass straight through to the ``trio.Nursery`` below."""

    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._nursery!r}>"

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The nursery's cancel scope: cancelling it ends every task in it."""
        return self._nursery.cancel_scope

    @property
    def child_tasks(self) -> frozenset[trio.lowlevel.Task]:
        """The tasks currently running in this nursery."""
        return self._nursery.child_tasks

    @property
    def parent_task(self) -> trio.lowlevel.Task:
        """The task that opened this nursery."""
        return self._nursery.parent_task


class ConnectionNursery(_NurseryView):
    """The connection's nursery, as a handler receives it (annotate it ``trio.Nursery``).

    ``start_soon``, ``start`` and ``cancel_scope`` work as on a ``trio.Nursery``; a task ended by
    an uncaught ``WebSocketDisconnect`` ends quietly without cancelling its siblings.
    """

    __slots__ = ()

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


#: What ``app.nursery`` does with a background task's error: ``report(task_name, error)``.
#: The error is an ``Exception``, or an ``ExceptionGroup`` of them.
Report: TypeAlias = Callable[[str, Exception], None]
#: What ``app.nursery`` tells as each task starts: ``started(task_name)``.
Started: TypeAlias = Callable[[str], None]


def _nothing(task_name: str) -> None:
    """No one to tell."""


def _report_errors(report: Report, failure: BaseException) -> None:
    """Hand the errors in ``failure`` to ``report``; raise whatever else it holds.

    ``trio.Cancelled``, ``KeyboardInterrupt`` and any other ``BaseException`` go on: a
    cancellation must reach its cancel scope, an interrupt must stop the program. Errors that
    came along with them in one group are reported all the same.
    """
    rest: BaseException | None = failure
    if isinstance(failure, Exception):
        errors: Exception | None = failure
        rest = None
    elif isinstance(failure, BaseExceptionGroup):
        errors, rest = failure.split(Exception)
    else:
        errors = None
    if errors is not None:
        report(trio.lowlevel.current_task().name, errors)
    if rest is not None:
        raise rest


async def _report_failure(
    report: Report, started: Started, async_fn: Callable[..., Awaitable[Any]], *args: Any
) -> None:
    started(trio.lowlevel.current_task().name)
    try:
        await async_fn(*args)
    except BaseException as failure:  # errors reported, anything else raised again
        _report_errors(report, failure)


async def _report_failure_after_start(
    report: Report,
    started: Started,
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
    task_status: trio.TaskStatus[Any],
) -> None:
    started(trio.lowlevel.current_task().name)
    status = _WatchedStatus(task_status)
    try:
        await async_fn(*args, task_status=status)
    except BaseException as failure:
        if not status.started_called:
            raise  # as in trio: the caller of start() gets the error, and nothing is counted
        _report_errors(report, failure)


class AppNursery(_NurseryView):
    """``app.nursery``: a nursery for background tasks that one failing task does not break.

    ``start_soon``, ``start``, ``cancel_scope``, ``child_tasks`` and ``parent_task`` work as on
    a ``trio.Nursery``. A task that raises an ``Exception`` (or an ``ExceptionGroup``) ends
    alone: the app logs it on logger ``trioweb`` with its traceback and counts it in
    :attr:`trioweb.App.background_failures`; the other tasks go on, and later ``start_soon()``
    and ``start()`` work. A task started with :meth:`start` that fails before it calls
    ``task_status.started()`` raises into the caller of ``start()``, as in trio, and is not
    counted. ``trio.Cancelled``, ``KeyboardInterrupt`` and other ``BaseException`` propagate as
    in any nursery. Cancelling :attr:`cancel_scope` ends every background task and closes
    ``app.nursery`` until the next startup (later starts raise ``RuntimeError``); the shutdown
    does this itself.
    """

    __slots__ = ("_report", "_started")

    def __init__(self, nursery: trio.Nursery, report: Report, started: Started = _nothing) -> None:
        super().__init__(nursery)
        self._report = report
        self._started = started

    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``async_fn(*args)`` as a background task of the app."""
        self._nursery.start_soon(
            _report_failure, self._report, self._started, async_fn, *args, name=name or async_fn
        )

    async def start(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Start ``async_fn(*args, task_status=...)``; return what it passes to ``started()``."""
        return await self._nursery.start(
            _report_failure_after_start,
            self._report,
            self._started,
            async_fn,
            *args,
            name=name or async_fn,
        )
