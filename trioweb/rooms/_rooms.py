"""Rooms: the registry of this process's open rooms, and the join that ties a member to one.

:class:`Rooms` is an app extension (``app.use(rooms)``) on top of a broadcast hub: in-process
with the hub's in-process backend, across processes with its Redis backend (same URL). It owns
the room store's connection, the presence heartbeat, and a nursery in which each open room
runs as a task (see :mod:`._room` for a room's life).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .._json import json_text
from .._reporting import Report, bounded_check
from ..broadcast import Broadcast, BrokerUnavailable, OverflowPolicy
from ..broadcast._fanout import check_policy
from ._memory import MemoryStore
from ._room import Member, Room, RoomSettings, RoomTask
from ._state import describe
from ._store import PresenceEntry, RoomStore
from .errors import InvalidName

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Rooms"]

logger = logging.getLogger("trioweb.rooms")

#: How many rooms one heartbeat call to the store refreshes, and how many calls are on their
#: way at once.
HEARTBEAT_BATCH = 50
HEARTBEAT_CONCURRENCY = 4
#: The longest room name and user name accepted (they end up in Redis keys and messages).
MAX_NAME = 200


def _new_store(
    hub: Broadcast, prefix: str, presence_ttl: float, state_ttl: float, history: int
) -> RoomStore:
    if hub.url is None:
        return MemoryStore(hub, prefix, state_ttl=state_ttl, history=history)
    # Imported here, as the hub imports its Redis backend: the Redis store needs the optional
    # extra (coredis), which an in-process app does not install.
    from .redis import RedisStore

    return RedisStore(
        hub.url, prefix, presence_ttl=presence_ttl, state_ttl=state_ttl, history=history
    )


class Rooms:
    """Rooms of members, each a scope: tasks per room, presence, one owner, shared state.

    ``hub`` carries the rooms' messages and announcements; rooms are shared by every process
    whose hub uses the same Redis (and the same ``prefix``), or live in this process with an
    in-process hub. Register both, the hub first: ``app.use(hub)``, ``app.use(rooms)``.

    - ``presence_ttl``: a crashed process's members leave every other process's view within
      this many seconds (heartbeats every quarter of it).
    - ``lease_ttl``: a crashed owner's room is taken over within this many seconds (plus a
      round trip) by another process that has the room open; a live owner renews its lease
      every third of it.
    - ``grace``: how long a room stays open in a process after its last local member left
      (its tasks keep running; a member joining meanwhile finds it as it was).
    - ``state_ttl``: how long a room's state outlives its last use (its last member or owner
      in any process).
    - ``history``: how many messages stored with ``room.history.append`` (or a state update
      with ``history=True``) each room keeps for members that resume (``join(..., since=)``).
    - ``max_buffer``, ``on_overflow``: each member's queue of room messages (see
      :class:`~trioweb.broadcast.Broadcast`).

    Declare what runs per room with the decorators :meth:`task` (in every process where the
    room is open) and :meth:`owner_task` (in the one process that owns the room).
    """

    def __init__(
        self,
        hub: Broadcast,
        *,
        prefix: str = "trioweb",
        presence_ttl: float = 5.0,
        lease_ttl: float = 5.0,
        grace: float = 0.0,
        state_ttl: float = 24 * 3600.0,
        history: int = 1000,
        max_buffer: int = 256,
        on_overflow: OverflowPolicy = "close",
    ) -> None:
        for label, value in (("presence_ttl", presence_ttl), ("lease_ttl", lease_ttl)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be a positive number of seconds, not {value!r}")
        if not (grace >= 0 and math.isfinite(grace)):
            raise ValueError(f"grace must be zero or more seconds, not {grace!r}")
        if not (state_ttl > 0 and math.isfinite(state_ttl)):
            raise ValueError(f"state_ttl must be a positive number of seconds, not {state_ttl!r}")
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
        if history < 1:
            raise ValueError(f"history must be at least 1 message, not {history}")
        if not prefix or ":" in prefix[-1:]:
            raise ValueError(f"prefix must be a non-empty name without a trailing ':' ({prefix!r})")
        self.hub = hub
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self.lease_ttl = lease_ttl
        self.grace = grace
        self.state_ttl = state_ttl
        self.history = history
        self.max_buffer = max_buffer
        self.on_overflow = check_policy(on_overflow)
        self._tasks: list[RoomTask] = []
        self._owner_tasks: list[RoomTask] = []
        self._rooms: dict[str, Room] = {}
        self._settings: RoomSettings | None = None
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<Rooms {self.prefix!r}: {len(self._rooms)} open here>"

    # -- declaring what runs per room -----------------------------------------------------

    def task(self, fn: RoomTask) -> RoomTask:
        """Decorator: run ``fn(room)`` in the room's nursery in every process where the room
        is open. It is cancelled when the room closes there; if it raises, the room fails."""
        self._check_not_running("task")
        self._tasks.append(fn)
        return fn

    def owner_task(self, fn: RoomTask) -> RoomTask:
        """Decorator: run ``fn(room)`` in exactly one process at a time, the room's owner.

        It is cancelled when that process loses the lease or the room closes there, and
        started in the process that takes over. Keep what must survive a change of owner in
        ``room.state`` (a deadline, not a counter in a local variable).
        """
        self._check_not_running("owner_task")
        self._owner_tasks.append(fn)
        return fn

    def _check_not_running(self, what: str) -> None:
        if self._settings is not None:
            raise RuntimeError(f"cannot add a room {what} while the rooms are running")

    # -- life -----------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: App | None = None) -> AsyncIterator[Rooms]:
        """Connect the room store for the duration of the block (``app.use`` does this)."""
        if self._settings is not None:
            raise RuntimeError("these Rooms are already running")
        store = _new_store(self.hub, self.prefix, self.presence_ttl, self.state_ttl, self.history)
        try:
            async with trio.open_nursery() as connection:
                await connection.start(store.run)
                # The rooms in a nursery of their own, inside the store's: at shutdown they
                # close (releasing leases, recording leaves) while the store is still there.
                async with trio.open_nursery() as nursery:
                    self._settings = RoomSettings(
                        hub=self.hub,
                        store=store,
                        grace=self.grace,
                        lease_ttl=self.lease_ttl,
                        max_buffer=self.max_buffer,
                        on_overflow=self.on_overflow,
                        tasks=list(self._tasks),
                        owner_tasks=list(self._owner_tasks),
                    )
                    self._nursery = nursery
                    nursery.start_soon(self._heartbeat, store)
                    try:
                        yield self
                    finally:
                        self._settings = None
                        self._nursery = None
                        nursery.cancel_scope.cancel()
                connection.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], BrokerUnavailable):
                raise group.exceptions[0] from None
            raise
        finally:
            self._rooms.clear()

    async def _heartbeat(self, store: RoomStore) -> None:
        """Keep this process's presences alive and sweep the dead ones, every quarter TTL.

        Rooms go to the store in batches (one script each), a few batches at once: a round
        must end well within an entry's lifetime (three rounds) however many rooms there are.
        A batch that fails is retried room by room, so that one broken room does not hold up
        the others.
        """
        interval = self.presence_ttl / 4
        limiter = trio.CapacityLimiter(HEARTBEAT_CONCURRENCY)
        failures: list[BaseException] = []
        failing = False

        async def refresh(batch: list[tuple[str, list[PresenceEntry]]]) -> None:
            async with limiter:
                try:
                    await store.heartbeat(batch)
                    return
                except store.errors as exc:
                    if len(batch) == 1:
                        failures.append(exc)
                        return
                for one in batch:
                    try:
                        await store.heartbeat([one])
                    except store.errors as exc:
                        failures.append(exc)

        while True:
            await trio.sleep(interval)
            failures.clear()
            rooms = [
                (room.name, [member.entry for member in room.members])
                for room in self._rooms.values()
            ]
            async with trio.open_nursery() as nursery:
                for start in range(0, len(rooms), HEARTBEAT_BATCH):
                    nursery.start_soon(refresh, rooms[start : start + HEARTBEAT_BATCH])
            if failures and not failing:
                logger.warning(
                    "presence heartbeat failed for %d room(s) (%s); retrying",
                    len(failures),
                    describe(failures[0]),
                )
            elif failing and not failures:
                logger.warning("presence heartbeat works again")
            failing = bool(failures)

    # -- operations -------------------------------------------------------------------------

    def report(self) -> Report:
        """This process's rooms for the metrics: how many are open, and their members here."""
        rooms = [room for room in self._rooms.values() if room.open]
        members = sum(len(room.members) for room in rooms)
        return Report("rooms", rooms_open=len(rooms), room_members=members)

    async def check_broker(self) -> str | None:
        """``None`` if the rooms are running and their store answers, else why not."""
        settings = self._settings
        if settings is None:
            await trio.lowlevel.checkpoint()
            return "the rooms are not running"
        problem = await bounded_check(settings.store.check)
        return None if problem is None else f"room store unreachable: {problem}"

    # -- rooms ----------------------------------------------------------------------------

    def get(self, name: str) -> Room | None:
        """The room ``name`` if it is open in this process."""
        room = self._rooms.get(name)
        return room if room is not None and room.open else None

    def __iter__(self) -> Iterator[Room]:
        return iter([room for room in self._rooms.values() if room.open])

    def __len__(self) -> int:
        return sum(1 for room in self._rooms.values() if room.open)

    def _open(self, name: str) -> Room:
        settings, nursery = self._settings, self._nursery
        if settings is None or nursery is None:
            raise RuntimeError(
                "the Rooms are not running: register them with app.use(rooms), after the hub "
                "(or enter rooms.lifespan())"
            )
        room = self._rooms.get(name)
        if room is None or not room.open:
            room = self._rooms[name] = Room(name, settings)
            nursery.start_soon(self._host, room, name=f"room {name!r}")
        return room

    async def _host(self, room: Room) -> None:
        """Run ``room`` until it closes or fails, then take it out of the registry."""
        try:
            await room.live()
        finally:
            if self._rooms.get(room.name) is room:
                del self._rooms[room.name]

    @asynccontextmanager
    async def join(
        self,
        room: str,
        *,
        user: str,
        meta: dict[str, Any] | None = None,
        since: str | None = None,
    ) -> AsyncIterator[Member]:
        """Be a member of ``room`` (opening it in this process if needed) for the block.

        The member is in the room's presence (everywhere) and receives its messages from the
        moment the block begins until it ends. Leaving the block, however it is left (a
        return, an error, the connection's cancellation at disconnect), removes the member; a
        join cancelled halfway leaves nothing behind. If the room fails, the block is
        cancelled and :class:`RoomFailed` raised (uncaught: close 1011); if the store cannot
        be reached, :class:`RoomUnavailable` (uncaught: close 1013). A room or user name that
        is empty, longer than 200 characters or not valid Unicode raises :class:`InvalidName`
        (uncaught: close 1008); ``meta`` must be a JSON object's worth of JSON-able values.

        ``since``, the last offset a reconnecting client saw, resumes it: ``member.recovery``
        says whether the room's history had everything published after it (``exact``), and
        :meth:`Member.forward_to` sends those messages first, then the live ones, with none
        twice. Without it, ``member.recovery`` is ``None``.
        """
        name = _check_name("room", room)
        _check_name("user", user)
        entry_meta = dict(meta or {})
        json_text(entry_meta)  # JSON-able, as the Redis store needs it: fail alike in-process
        async with self._open(name).membership(user, entry_meta, since) as member:
            yield member


def _check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidName(f"a {what} name must be a non-empty string, not {name!r}")
    if len(name) > MAX_NAME:
        raise InvalidName(f"a {what} name is at most {MAX_NAME} characters ({len(name)} given)")
    try:
        # A lone surrogate (JSON from a client may carry one) cannot reach Redis: in a topic
        # name it would stop the broadcast hub's reader, and with it every subscription.
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"a {what} name must be valid Unicode text, not {name!r}") from None
    return name
