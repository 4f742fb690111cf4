"""A bounded FIFO that producers fill without ever waiting, and consumers drain with a wait.

A list of items and a list of waiting tasks rather than a trio memory channel: it costs a
fraction of the memory per socket, and producers that must never block (the connection's
reader, the broadcast hub) need ``put`` to refuse instead of wait. What to do when it refuses
is the caller's policy.

It sits on every message's path, so it is built from trio's lowest-level parts: a waiting
consumer is parked with ``wait_task_rescheduled`` and woken with ``reschedule``, with no
``ParkingLot`` (an object and an ordered dict per buffer) in between.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._yields import yields_so_far

__all__ = ["Buffer", "park", "wake_all", "wake_one"]

T = TypeVar("T")


def _mod256(points: int | None) -> int:
    """A task's count of trips modulo 256 (a small int: no object), -1 if trio does not say."""
    return -1 if points is None else points & 255


async def park(waiters: list[Task]) -> None:
    """Wait in ``waiters`` (FIFO) until :func:`wake_one` or :func:`wake_all` picks this task.

    A cancelled waiter leaves the list. Like ``ParkingLot.park``, this is a full checkpoint.
    """
    task = current_task()
    waiters.append(task)
    await wait_task_rescheduled(_Remover(waiters, task))


class _Remover:
    """The abort callback that takes ``task`` out of ``waiters`` when it is cancelled (a small
    object: a closure and its two cells would take four times the memory)."""

    __slots__ = ("task", "waiters")

    def __init__(self, waiters: list[Task], task: Task) -> None:
        self.waiters = waiters
        self.task = task

    def __call__(self, _: Any) -> Abort:
        self.waiters.remove(self.task)
        return Abort.SUCCEEDED


def wake_one(waiters: list[Task]) -> None:
    """Wake the longest-waiting task of ``waiters``, if any."""
    if waiters:
        reschedule(waiters.pop(0))


def wake_all(waiters: list[Task]) -> None:
    """Wake every task of ``waiters``."""
    while waiters:
        reschedule(waiters.pop(0))


class Buffer(Generic[T]):
    """A bounded FIFO with a waiting ``get``; ``close()`` wakes every waiter."""

    __slots__ = ("_abort", "_closed", "_items", "_points", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a buffer holds at least 1 item, not {limit}")
        self.limit = limit
        # A list, not a deque: an empty deque costs some 600 bytes a socket, and the list's
        # pop(0) moves at most ``limit`` pointers.
        self._items: list[T] = []
        self._waiters: list[Task] = []
        self._closed = False
        # The cancellation callback of the last task that waited in get(), kept for its next
        # wait: a buffer usually has one consumer, which then builds it once, not per message.
        self._abort: _Remover | None = None
        # The consumer's count of trips through trio's scheduler when its last get() returned,
        # modulo 256 (a small int: no object per socket), -1 before the first: a get() that
        # finds an item yields only if the consumer has made no trip since. Modulo 256, a
        # consumer that made exactly 256 looks as if it made none, and yields once more.
        self._points = -1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def put(self, item: T) -> bool:
        """Queue ``item``; return ``False`` (and keep nothing) if the buffer is full or closed."""
        items = self._items
        if len(items) >= self.limit or self._closed:
            return False
        items.append(item)
        if self._waiters:
            reschedule(self._waiters.pop(0))
        return True

    def put_unwoken(self, item: T) -> bool | None:
        """Queue ``item`` like :meth:`put`, but leave a waiting consumer asleep, for the caller
        to wake later with :meth:`wake`.

        Returns ``None`` if the buffer is full or closed (and keeps nothing); otherwise whether
        a consumer is asleep in :meth:`get`, waiting for that :meth:`wake` (one call for what
        a fan-out asks of every buffer on every message).
        """
        items = self._items
        if len(items) >= self.limit or self._closed:
            return None
        items.append(item)
        # Branches rather than bool(): this runs for every subscriber of every message.
        if self._waiters:  # noqa: SIM103
            return True
        return False

    @property
    def waiting(self) -> bool:
        """True if a consumer is asleep in :meth:`get`."""
        return bool(self._waiters)

    def wake(self) -> None:
        """Wake the longest-waiting consumer, if any (a consumer woken with nothing to take
        goes back to sleep)."""
        if self._waiters:
            reschedule(self._waiters.pop(0))

    def force_put(self, item: T) -> None:
        """Queue ``item`` even past the limit (for rare control items that must not be lost);
        a closed buffer still keeps nothing."""
        if not self._closed:
            self._items.append(item)
            wake_one(self._waiters)

    def drop_oldest(self) -> None:
        """Forget the oldest queued item."""
        del self._items[0]

    def clear(self) -> int:
        """Forget every queued item; return how many there were."""
        count = len(self._items)
        self._items.clear()
        return count

    def peek_last(self) -> T | None:
        """The newest queued item, if any."""
        return self._items[-1] if self._items else None

    def close(self) -> None:
        """Forget what is queued and wake every waiting ``get``, which now raises
        ``StopAsyncIteration``."""
        self._closed = True
        self._items.clear()
        wake_all(self._waiters)

    async def get(self) -> T:
        """The next item, waiting for one; ``StopAsyncIteration`` once the buffer is closed.

        Always a cancellation point; a schedule point too, unless it finds an item and the
        consumer has been through the scheduler since its last get() (its send yielded, say):
        a receive-and-send loop then yields once per message, not twice.

        That exception, rather than a sentinel, makes ``get()`` an ``__anext__`` as it is: an
        async iterator over a buffer can hand out its coroutine, with no frame of its own in
        between (on every message, and on the stack of every waiting consumer).
        """
        await checkpoint_if_cancelled()
        items = self._items
        if items and (points := yields_so_far(current_task())) is not None:
            # A consumer that went through the scheduler since its last get() (a handler whose
            # send yielded) has had its schedule point for this item: no second one. A loop of
            # get() alone still yields on every one (docs/performance.md, "The test client").
            last = self._points
            if last != points & 255 and last >= 0:
                self._points = points & 255
                return items.pop(0)
        if items or self._closed:
            await cancel_shielded_checkpoint()
            # Read after the checkpoint: another consumer may have taken the item.
            if items:
                self._points = _mod256(yields_so_far(current_task()))
                return items.pop(0)
            if self._closed:
                raise StopAsyncIteration
        # Parked right here rather than through park(): one coroutine less on every waiting
        # consumer's stack.
        waiters = self._waiters
        task = current_task()
        abort = self._abort
        if abort is None or abort.task is not task:
            abort = self._abort = _Remover(waiters, task)
        while True:
            waiters.append(task)
            await wait_task_rescheduled(abort)
            if items:
                self._points = _mod256(yields_so_far(task))
                return items.pop(0)
            if self._closed:
                raise StopAsyncIteration
