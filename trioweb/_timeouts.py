"""Time limits for many short waits, kept by one task instead of a cancel scope per wait.

The test client bounds every wait for the app, and most waits last a few microseconds: a
cancel scope with a deadline for each (a scope, a cancel status, a deadline in trio's heap)
cost as much as the rest of an in-process round trip. Here a wait is a task parked in a list
of waiters (:func:`trioweb._buffer.park`), noted with its deadline in a dict, and one task
sleeps until the earliest deadline and wakes whichever waits are still parked by then with an
error. Only a wait that is due before the task's next wake-up moves it (the first one after a
quiet spell); the ones that follow with the same limit cost a clock read and a dict entry.
With nothing waiting, the task sleeps without a deadline, so that a fake clock that jumps to
the next deadline does not run away while a test waits for something outside trio.
"""

from __future__ import annotations

import math

import trio
from outcome import Error
from trio.lowlevel import Task, current_task, reschedule

from ._buffer import park

__all__ = ["WaitTimer"]


class _Expired(Exception):
    """Thrown into a wait that ran out of time."""


class WaitTimer:
    """Deadlines for waits parked in lists of tasks; :meth:`run` must be running."""

    def __init__(self) -> None:
        # Every wait in progress: its task, its deadline and the list it is parked in.
        self._waits: dict[Task, tuple[float, list[Task]]] = {}
        # The scope run() sleeps in: its deadline is when run() wakes next.
        self._sleep: trio.CancelScope | None = None
        self._stopper = trio.CancelScope()

    async def park(self, waiters: list[Task], deadline: float) -> bool:
        """Wait in ``waiters`` until woken (``True``), or until trio's clock reaches
        ``deadline`` (``False``).

        Cancellable, and a full checkpoint, like :func:`trioweb._buffer.park`.
        """
        task = current_task()
        self._waits[task] = (deadline, waiters)
        sleep = self._sleep
        if sleep is not None and deadline < sleep.deadline:
            sleep.deadline = deadline  # (before run() has started, it sees this wait anyway)
        try:
            await park(waiters)
        except _Expired:
            return False
        finally:
            del self._waits[task]
        return True

    async def run(self) -> None:
        """Expire waits at their deadlines until :meth:`stop`."""
        with self._stopper:
            while True:
                now = trio.current_time()
                wake_at = math.inf
                for task, (deadline, waiters) in self._waits.items():
                    if deadline > now:
                        wake_at = min(wake_at, deadline)
                    elif task in waiters:  # (not woken already, its wait still in the dict)
                        waiters.remove(task)
                        reschedule(task, Error(_Expired()))
                with trio.CancelScope(deadline=wake_at) as self._sleep:
                    await trio.sleep_forever()

    def stop(self) -> None:
        """End :meth:`run`."""
        self._stopper.cancel()
