"""A bounded FIFO that producers fill without ever waiting, and consumers drain with a wait.

A deque and a parking lot rather than a trio memory channel: it costs a fraction of the memory
per socket, and producers that must never block (the connection's reader, the broadcast hub)
need ``put`` to refuse instead of wait. What to do when it refuses is the caller's policy.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Buffer(Generic[T]):
    """A bounded FIFO with a waiting ``get``; ``close()`` wakes every waiter."""

    __slots__ = ("_closed", "_items", "_lot", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a buffer holds at least 1 item, not {limit}")
        self.limit = limit
        self._items: deque[T] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def put(self, item: T) -> bool:
        """Queue ``item``; return ``False`` (and keep nothing) if the buffer is full or closed."""
        if len(self._items) >= self.limit or self._closed:
            return False
        self._items.append(item)
        self._lot.unpark()
        return True

    def force_put(self, item: T) -> None:
        """Queue ``item`` even past the limit (for rare control items that must not be lost);
        a closed buffer still keeps nothing."""
        if not self._closed:
            self._items.append(item)
            self._lot.unpark()

    def drop_oldest(self) -> None:
        """Forget the oldest queued item."""
        self._items.popleft()

    def clear(self) -> int:
        """Forget every queued item; return how many there were."""
        count = len(self._items)
        self._items.clear()
        return count

    def peek_last(self) -> T | None:
        """The newest queued item, if any."""
        return self._items[-1] if self._items else None

    def close(self) -> None:
        """Forget what is queued and wake every waiting ``get``, which now returns ``None``."""
        self._closed = True
        self._items.clear()
        self._lot.unpark_all()

    async def get(self) -> T | None:
        """The next item, waiting for one; ``None`` once the buffer is closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            if self._items or self._closed:
                if not parked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                # Read after the checkpoint: another consumer may have taken the item.
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    return None
            await self._lot.park()
            parked = True
