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
- for every message out, the connection's ``send`` waits with :meth:`SendLock.wait` only when
  another sender has it, and otherwise takes it with :meth:`SendLock.try_acquire` (a plain
  call: no coroutine on the hot path) just before a server's send that may yield; one that
  returned ``_types.SENT`` (the test client's) did not, so no other sender ran meanwhile and
  it needed no lock. It yields at the end only if the server's send did not yield itself
  (``_yields.yields_so_far`` tells; SENT is not counted at all). hypercorn's send yields for
  a live peer (once, in its socket write, with trioweb's TCP send: docs/hypercorn.md, fact 25)
  and returns without yielding once the peer is gone (fact 2), so a send loop never spins and
  never pays for two trips through the scheduler.
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
from ._yields import yields_so_far

__all__ = ["SendLock"]


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
        if self.try_acquire():
            await cancel_shielded_checkpoint()
        else:
            await self.wait()

    def release(self) -> None:
        """Hand the lock to the next waiter, or free it."""
        waiters = self._waiters
        if waiters:
            reschedule(waiters.pop(0))  # it stays busy: the next sender has it
        else:
            self._busy = False

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without a checkpoint; False if another sender has it."""
        if self._busy:
            return False
        self._busy = True
        return True

    async def wait(self) -> None:
        """Wait in line until :meth:`release` hands the lock over (call it after
        :meth:`try_acquire` said no); a cancelled waiter leaves the line."""
        if self._waiters is None:
            self._waiters = []
        await park(self._waiters)  # release() hands the lock over: it stays busy

    async def acquire_for_send(self) -> int | None:
        """Take the lock for a send as the connection's ``send`` does: a cancel point, and no
        yield when it is free. Returns :func:`yields_so_far` for :meth:`release_after_send`."""
        await checkpoint_if_cancelled()
        points = yields_so_far(current_task())
        if not self.try_acquire():
            await self.wait()
        return points

    async def release_after_send(self, points: int | None) -> None:
        """Release the lock; yield once if nothing yielded since :meth:`acquire_for_send`."""
        self.release()
        if points is None or yields_so_far(current_task()) == points:
            await cancel_shielded_checkpoint()
