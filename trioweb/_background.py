"""The runtime behind ``app.nursery``: the task that hosts it, the failure count, the policy.

A failing background task is one task's problem: :class:`~trioweb.nursery.AppNursery` ends it
alone and reports it here, where it is logged with its traceback and counted. What happens next
is the app's policy (``App(background_failure=...)``): ``"log"`` and the app goes on serving;
``"exit"`` and :func:`trioweb.serve`, which waits for :meth:`BackgroundTasks.wait_for_failure`,
drains the server and raises.

Only a count and the first failure's one-line description are kept, never the exceptions: a
task that fails over and over must not pin every traceback (and its frames) in memory.
"""

from __future__ import annotations

import logging
from typing import Literal, TypeAlias, get_args

import trio

from ._failures import leaves
from .nursery import AppNursery

logger = logging.getLogger("trioweb")

#: What a failing background task does to the app (see :class:`~trioweb.App`).
BackgroundFailurePolicy: TypeAlias = Literal["log", "exit"]
#: How many names of failed tasks are kept for the readiness check.
MAX_FAILED_NAMES = 100


def describe(exc: BaseException) -> str:
    """``"ValueError: message"``: one line naming an error (a group's first leaf)."""
    leaf = next(leaves(exc), exc)  # a group says nothing: name what is inside
    return f"{type(leaf).__name__}: {leaf}"


class BackgroundTasks:
    """``app.nursery`` for one App: open during each lifespan, its failures counted."""

    def __init__(self, policy: BackgroundFailurePolicy) -> None:
        if policy not in get_args(BackgroundFailurePolicy):
            raise ValueError(f"background_failure must be 'log' or 'exit', not {policy!r}")
        self.policy: BackgroundFailurePolicy = policy
        #: Background tasks that failed since the last startup.
        self.failures = 0
        #: The first of them, in one line.
        self.first_failure: str | None = None
        # The names of the tasks that failed (bounded: a name is a task's function, and a
        # program has few), for the readiness check: see unrecovered().
        self._failed_names: set[str] = set()
        self._failed = trio.Event()
        self._nursery: AppNursery | None = None
        self._closed = trio.Event()

    def reset(self) -> None:
        """Forget the failures of an earlier lifespan."""
        self.failures = 0
        self.first_failure = None
        self._failed_names.clear()
        if self._failed.is_set():  # (an unset one may have a waiter: keep it)
            self._failed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[AppNursery]) -> None:
        """Host ``app.nursery`` until :meth:`stop`; report the :class:`AppNursery` when open."""
        self._closed = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = AppNursery(nursery, self._report, self._started)
                task_status.started(self._nursery)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._closed.set()

    async def stop(self) -> None:
        """Cancel every background task and wait until they are all gone."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._closed.wait()

    async def wait_for_failure(self) -> None:
        """Return once a background task has failed (at once if one already has)."""
        await self._failed.wait()

    def unrecovered(self) -> list[str]:
        """The tasks that failed and have not been started again: the names of failed tasks
        no task of the same name has been started in ``app.nursery`` since. An app recovers
        from a failure by starting the task again (a supervisor loop, or the next of a kind of
        short job: "running now" would count a job that failed once, as long as none of its
        kind happened to be running, for good)."""
        return sorted(self._failed_names)

    def _started(self, task_name: str) -> None:
        self._failed_names.discard(task_name)

    def summary(self) -> str | None:
        """What failed, in one line (``None``: nothing did)."""
        if not self.failures:
            return None
        if self.failures == 1:
            return f"a background task in app.nursery failed: {self.first_failure}"
        return (
            f"{self.failures} background tasks in app.nursery failed, "
            f"the first: {self.first_failure}"
        )

    def _report(self, task_name: str, error: Exception) -> None:
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = describe(error)
        if len(self._failed_names) < MAX_FAILED_NAMES:
            self._failed_names.add(task_name)
        logger.error(
            "background task %s in app.nursery failed (%d failure(s) since startup)",
            task_name,
            self.failures,
            exc_info=error,
        )
        self._failed.set()
