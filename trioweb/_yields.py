"""How many times a task has been through trio's scheduler: the one read of trio's private count.

trio counts each task's trips through its scheduler as ``Task._schedule_points`` (what
``trio.testing.assert_checkpoints`` reads). A send, a get from a buffer and the test client's
receive use it to yield only when the task has not yielded since a known moment: every such
call stays a checkpoint, without two trips through the scheduler per message. It is private to
trio: without it, they always yield, as they must then.
"""

from __future__ import annotations

from trio.lowlevel import Task

__all__ = ["yields_so_far"]

# Which trio this is, decided once here rather than on each of the calls every message makes.
if hasattr(Task, "_schedule_points"):

    def yields_so_far(task: Task) -> int | None:
        """How many times ``task`` has been through trio's scheduler; None if trio does not
        say (then the caller must always yield once more)."""
        return task._schedule_points

else:  # pragma: no cover (a trio without the count)

    def yields_so_far(task: Task) -> int | None:
        """None: this trio does not count its tasks' trips through the scheduler."""
        return None
