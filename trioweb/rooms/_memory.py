"""The in-process room store: one process's rooms, with the semantics of the Redis store.

Presence needs no expiry here (a process that dies takes every member with it), leases expire
on trio's clock (so trio's fake clock drives them in tests), and announcements go through the
hub like the Redis store's, so each process-local view is built the same way.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections import deque
from typing import Any

import trio

from ..broadcast import Broadcast
from ._store import (
    Grant,
    Lease,
    PresenceEntry,
    Recovery,
    StateWrite,
    Topics,
    joined,
    left,
    released,
    with_offset,
)

__all__ = ["MemoryStore"]


class _Room:
    __slots__ = (
        "fence",
        "history",
        "offset",
        "owner",
        "owner_until",
        "presence",
        "state",
        "used",
        "version",
    )

    def __init__(self, history: int) -> None:
        self.history: deque[tuple[int, str]] = deque(maxlen=history)
        # The last offset given (0: none yet).
        self.offset = 0
        self.presence: dict[str, PresenceEntry] = {}
        self.owner: str | None = None
        self.owner_until = 0.0
        self.fence = 0
        self.version = 0
        self.state: dict[str, Any] = {}
        # When the room last had a member or an owner (trio's clock): its record, state
        # included, is forgotten ``state_ttl`` after that, as Redis forgets it.
        self.used = 0.0


class MemoryStore:
    """Rooms kept in this process, announced through an in-process hub."""

    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, hub: Broadcast, prefix: str, *, state_ttl: float, history: int) -> None:
        self._hub = hub
        self._history = history
        self._prefix = prefix
        self._state_ttl = state_ttl
        self._rooms: dict[str, _Room] = {}
        self._next_sweep = 0.0
        # One write and its announcement at a time, so announcements leave in write order
        # (trio does not promise which of two waking tasks runs first).
        self._lock = trio.Lock()
        self._tokens = itertools.count(1)

    def _room(self, room: str) -> _Room:
        now = trio.current_time()
        if now >= self._next_sweep:
            self._forget_unused(now)
        found = self._rooms.get(room)
        if found is None:
            found = self._rooms[room] = _Room(self._history)
        found.used = now
        return found

    def _forget_unused(self, now: float) -> None:
        """Drop the records of rooms unused for ``state_ttl`` (at most every tenth of it)."""
        self._next_sweep = now + self._state_ttl / 10
        for name, record in list(self._rooms.items()):
            in_use = record.presence or (record.owner is not None and record.owner_until > now)
            if in_use:
                record.used = now
            elif now - record.used >= self._state_ttl:
                del self._rooms[name]

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Nothing to connect to."""
        task_status.started()
        await trio.sleep_forever()

    async def check(self) -> None:
        """Nothing to connect to: always reachable."""
        await trio.lowlevel.checkpoint()

    def topics(self, room: str) -> Topics:
        """``PREFIX:room:NAME`` and ``PREFIX:presence:NAME``."""
        return Topics(f"{self._prefix}:room:{room}", f"{self._prefix}:presence:{room}")

    async def now(self) -> float:
        """trio's clock: fake in tests with trio's fake clock."""
        await trio.lowlevel.checkpoint()
        return trio.current_time()

    async def join(self, room: str, entry: PresenceEntry) -> None:
        """Add ``entry`` and announce it."""
        async with self._lock:
            self._room(room).presence[entry.id] = entry
            await self._hub.publish(self.topics(room).presence, joined([entry]))

    async def leave(self, room: str, entry_id: str) -> bool:
        """Remove the entry and announce it, if it was there."""
        async with self._lock:
            state = self._rooms.get(room)
            if state is None or state.presence.pop(entry_id, None) is None:
                return False
            await self._hub.publish(self.topics(room).presence, left([entry_id]))
            return True

    async def heartbeat(self, rooms: list[tuple[str, list[PresenceEntry]]]) -> None:
        """Nothing expires in one process."""
        await trio.lowlevel.checkpoint()

    async def presence(self, room: str) -> list[PresenceEntry]:
        """Every entry, oldest first."""
        await trio.lowlevel.checkpoint()
        state = self._rooms.get(room)
        return [] if state is None else list(state.presence.values())

    async def acquire(self, room: str, ttl: float) -> Grant:
        """The lease if it is free or expired."""
        await trio.lowlevel.checkpoint()
        state = self._room(room)
        now = trio.current_time()
        if state.owner is not None and state.owner_until > now:
            return Grant(None, state.owner_until - now)
        state.fence += 1
        state.owner = f"{state.fence}:{next(self._tokens)}"
        state.owner_until = now + ttl
        return Grant(Lease(room, state.owner, state.fence), 0.0)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend the lease if it is still the room's."""
        await trio.lowlevel.checkpoint()
        state = self._room(lease.room)
        now = trio.current_time()
        if state.owner != lease.token or state.owner_until <= now:
            return False
        state.owner_until = now + ttl
        return True

    async def release(self, lease: Lease) -> None:
        """Free the lease if it is still ours, and announce it."""
        async with self._lock:
            state = self._room(lease.room)
            if state.owner != lease.token:
                return
            state.owner = None
            await self._hub.publish(self.topics(lease.room).presence, released(lease.token))

    def _store(self, record: _Room, body: str) -> tuple[str, str]:
        """The next offset, and ``body`` stored with it."""
        if record.offset == 0:
            # A new counter starts at the wall clock in microseconds: above any offset this
            # room had in an earlier life (a restart, a forgotten record).
            newest = record.history[-1][0] if record.history else 0
            record.offset = max(time.time_ns() // 1000, newest + 1)
        else:
            record.offset += 1
        message = with_offset(body, record.offset)
        record.history.append((record.offset, message))
        return str(record.offset), message

    async def append(self, room: str, body: str) -> str:
        """Store and publish, under the store's lock (offsets leave in their order)."""
        async with self._lock:
            offset, message = self._store(self._room(room), body)
            await self._hub.publish(self.topics(room).messages, message)
            return offset

    async def recover(self, room: str, since: int) -> Recovery:
        """What the history holds after ``since``, if that is everything since."""
        await trio.lowlevel.checkpoint()
        record = self._rooms.get(room)
        last = 0 if record is None else record.offset
        if record is None or since > last:
            return Recovery(False)
        if not record.history:
            return Recovery(since == last)
        if since < record.history[0][0] - 1:
            return Recovery(False)
        return Recovery(True, tuple(m for offset, m in record.history if offset > since))

    async def read_state(self, room: str) -> tuple[int, dict[str, Any]]:
        """A copy of the state, and its version."""
        await trio.lowlevel.checkpoint()
        state = self._rooms.get(room)
        if state is None:
            return 0, {}
        return state.version, copy.deepcopy(state.state)

    async def write_state(
        self,
        room: str,
        version: int,
        state: dict[str, Any],
        *,
        lease: Lease | None,
        announce: str | bytes | None,
        history: bool = False,
    ) -> StateWrite:
        """Compare-and-set, then announce, under the store's lock."""
        async with self._lock:
            current = self._room(room)
            if lease is not None and (
                current.owner != lease.token or current.owner_until <= trio.current_time()
            ):
                return StateWrite("fenced", current.version, copy.deepcopy(current.state))
            if current.version != version:
                return StateWrite("conflict", current.version, copy.deepcopy(current.state))
            current.version += 1
            current.state = copy.deepcopy(state)
            offset = None
            if announce is not None:
                if history and isinstance(announce, str):
                    offset, announce = self._store(current, announce)
                await self._hub.publish(self.topics(room).messages, announce)
            return StateWrite("applied", current.version, offset=offset)
