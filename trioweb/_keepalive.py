"""Pings for every WebSocket of a trio run, from one task: a timer per socket, not a task.

hypercorn pings from a task per socket (``WSStream._send_pings``), and trioweb's stream once did
too, in a hypercorn ``SingleTask`` so that the end of the stream could stop it at once: about
6.6 KiB per idle socket, a quarter of what a socket costs, and a task start in every handshake.
Here each socket that pings is one entry in a heap of deadlines, kept by a single system task
per trio run (``trio.lowlevel.spawn_system_task``: it belongs to no connection, so no
connection's end waits for it, and it ends with the run). At a socket's deadline the task asks
it what to do (:meth:`Pingable.keepalive`); the socket answers with the delay to its next
deadline, or None once it is done, and starts whatever it has to send in a task of its own
connection, so that a peer that stopped reading stalls only its own ping.

A socket cancels its deadline when it ends, so that nothing of it stays in the heap: cancelled
entries are swept out in batches (a heap cannot drop an entry from its middle cheaply).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import Protocol

import trio
from trio.lowlevel import RunVar, spawn_system_task

__all__ = ["Deadline", "Pingable", "schedule"]

logger = logging.getLogger("trioweb")


class Pingable(Protocol):
    """A socket the keepalive task calls at its deadlines."""

    def keepalive(self) -> float | None:
        """The deadline has come: act (without waiting), and return the seconds to the next
        one, or None to be called no more."""
        ...


class Deadline:
    """One socket's place in the heap; :meth:`cancel` takes it out (at the socket's end)."""

    __slots__ = ("_keeper", "order", "socket", "when")

    def __init__(self, when: float, order: int, socket: Pingable, keeper: _Keepalive) -> None:
        self.when = when
        self.order = order  # ties in time are served in the order they came
        self.socket: Pingable | None = socket
        self._keeper = keeper

    def __lt__(self, other: Deadline) -> bool:
        return (self.when, self.order) < (other.when, other.order)

    def cancel(self) -> None:
        """No more calls: the socket is let go of at once, the entry at the next cleanup."""
        if self.socket is not None:
            self.socket = None
            self._keeper.cancelled()


class _Keepalive:
    """The heap of deadlines of one trio run, and the task that keeps it."""

    #: Cancelled entries are swept out of the heap once there are this many and they are at
    #: least half of it: a socket's end costs O(1), amortized, and leaves no memory behind.
    SWEEP_AT = 64

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._order = itertools.count()
        self._cancelled = 0
        self._sleep = trio.CancelScope()

    def add(self, socket: Pingable, delay: float) -> Deadline:
        entry = Deadline(trio.current_time() + delay, next(self._order), socket, self)
        heapq.heappush(self._heap, entry)
        if entry.when < self._sleep.deadline:
            self._sleep.deadline = entry.when  # the task sleeps until the earliest one
        return entry

    def cancelled(self) -> None:
        self._cancelled += 1
        heap = self._heap
        if self._cancelled >= self.SWEEP_AT and 2 * self._cancelled >= len(heap):
            heap[:] = [entry for entry in heap if entry.socket is not None]
            heapq.heapify(heap)
            self._cancelled = 0

    async def run(self) -> None:
        heap = self._heap
        while True:
            self._sleep = trio.CancelScope(deadline=heap[0].when if heap else float("inf"))
            with self._sleep:
                await trio.sleep_forever()
            now = trio.current_time()
            while heap and heap[0].when <= now:
                self._call(heapq.heappop(heap), now)

    def _call(self, entry: Deadline, now: float) -> None:
        """One deadline come; the socket is called and put back, or dropped. (A method of its
        own: no local of the task keeps the last socket alive while it sleeps.)"""
        socket = entry.socket
        if socket is None:
            self._cancelled -= 1
            return
        try:
            delay = socket.keepalive()
        except Exception:  # a bug: it must not stop the pings of every other socket
            logger.exception("keepalive of a WebSocket failed; it pings no more")
            delay = None
        if delay is None:
            entry.socket = None
            return
        # From the deadline, not from now: a late wake-up does not shift the rest.
        entry.when = max(entry.when + delay, now)
        entry.order = next(self._order)
        heapq.heappush(self._heap, entry)


_KEEPALIVE: RunVar[_Keepalive] = RunVar("trioweb_keepalive")


def schedule(socket: Pingable, delay: float) -> Deadline:
    """Call ``socket.keepalive()`` in ``delay`` seconds (and from then on as it says), until
    it returns None or the :class:`Deadline` returned is cancelled. Must be called from within
    a trio run; the run's keepalive task starts with its first socket."""
    try:
        keepalive = _KEEPALIVE.get()
    except LookupError:
        keepalive = _Keepalive()
        _KEEPALIVE.set(keepalive)
        spawn_system_task(keepalive.run, name="trioweb keepalive")
    return keepalive.add(socket, delay)
