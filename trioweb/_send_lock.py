"""The send lock of one socket: senders take turns, first come first served.

ASGI ``send`` must not be called by two tasks at once for one socket (a message would be
interleaved with another), and trioweb lets any number of a connection's tasks send. So every
send, accept, denial and close of a socket goes through this lock.

It is a flag and a list of waiting tasks made on the first contention, not a ``trio.Lock``,
which would cost three objects a socket. Like ``trio.Lock``, a waiter that is cancelled leaves
the queue, and the lock is handed straight to the next waiter on release (it never looks free
in between, so no newcomer overtakes a waiter).

Two ways to hold it:

- :meth:`SendLock.acquire` / :meth:`SendLock.release`, a full checkpoint like
  ``trio.Lock.acquire``: for the handshake's answer and the close, which are rare.
- :meth:`SendLock.acquire_for_send` / :meth:`SendLock.release_after_send`, for every message out:
  a cancel point, no yield when the lock is free, and one yield at the end only if the server's
  send did not yield itself. hypercorn's send yields for a live peer (its own lock, then the
  socket) and returns without yielding once the peer is gone (docs/hypercorn.md, fact 2), so a
  send loop never spins and never pays for two trips through the scheduler.
"""

from __future__ import annotations

from trio.lowlevel import (
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
)

from ._buffer import park

__all__ = ["SendLock"]

#: Whether trio counts each task's trips through its scheduler, as ``Task._schedule_points``
#: (``trio.testing.assert_checkpoints`` reads it). It is private to trio: without it, every
#: send yields once more, as it must then.
_COUNTS_YIELDS = hasattr(Task, "_schedule_points")


def _yields_so_far(task: Task) -> int:
    return task._schedule_points if _COUNTS_YIELDS else -1


class SendLock:
    """Serialises the senders of one socket, FIFO."""

    __slots__ = ("_busy", "_waiters")

    def __init__(self) -> None:
        self._busy = False
        self._waiters: list[Task] | None = None

    @property
    def held(self) -> bool:
        """Whether a sender has the lock."""
        return self._busy

    async def acquire(self) -> None:
        """Take the lock; always a full checkpoint, as ``trio.Lock.acquire``."""
        await checkpoint_if_cancelled()
        if self._busy:
            await self._wait()
        else:
            self._busy = True
            await cancel_shielded_checkpoint()

    def release(self) -> None:
        """Hand the lock to the next waiter, or free it."""
        waiters = self._waiters
        if waiters:
            reschedule(waiters.pop(0))  # it stays busy: the next sender has it
        else:
            self._busy = False

    async def acquire_for_send(self) -> int:
        """Take the lock for a send: a cancel point, and no yield when it is free.

        Returns what :meth:`release_after_send` needs to know whether the send yielded.
        """
        await checkpoint_if_cancelled()
        points = _yields_so_far(current_task())
        if self._busy:
            await self._wait()
        else:
            self._busy = True
        return points

    async def release_after_send(self, points: int) -> None:
        """Release the lock; yield once if nothing yielded since :meth:`acquire_for_send`."""
        self.release()
        if not _COUNTS_YIELDS or _yields_so_far(current_task()) == points:
            await cancel_shielded_checkpoint()

    async def _wait(self) -> None:
        if self._waiters is None:
            self._waiters = []
        await park(self._waiters)  # release() hands the lock over: it stays busy
