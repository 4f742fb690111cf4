"""One room in one process: its scope, its local members, its view of presence, its state.

A :class:`Room` exists in a process while the process has members in it (plus an optional
grace period). Its nursery holds the room's tasks, the relay of the room's messages to the
local members and the owner election; when the last local member leaves, the nursery is
cancelled, as a connection's is at disconnect. The life of a room, as phases:

============  ====================================================  =================
phase         what holds                                            next
============  ====================================================  =================
opening       subscribing to the room's topics, reading presence    open, failed
open          members join and leave; tasks run                     closing, failed
closing       no members for the grace period: the nursery is       (gone)
              cancelled, the lease released, the topics left
failed        a task raised: members' blocks cancelled with         (gone)
              :class:`RoomFailed`, the error logged
============  ====================================================  =================

A room that is closing or failed is out of the registry at once: the next join opens a new
one, even while the old one still finishes its cleanup.
"""

from __future__ import annotations

import copy
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .._failures import leaves
from ..broadcast import Broadcast, Gap, OverflowPolicy, SubscriberTooSlow, Subscription
from ..broadcast._fanout import Fanout
from ..broadcast.hub import encode
from ._history import RoomHistory, offset_of
from ._member import Member
from ._ownership import hold_ownership
from ._presence import Presence
from ._state import RoomState, describe
from ._store import Lease, PresenceEntry, RoomStore, Topics, parse_announcement
from .errors import RoomFailed, RoomUnavailable

if TYPE_CHECKING:
    pass

__all__ = ["Member", "Room", "RoomSettings", "RoomTask"]

logger = logging.getLogger("trioweb.rooms")

#: A room task: called with the room, run in the room's nursery.
RoomTask = Callable[["Room"], Awaitable[Any]]

#: How many room messages may wait for the relay task before the room shows its members a gap.
RELAY_BUFFER = 10_000
#: How long a leave, a release or a presence read may take in cleanup before it is abandoned
#: (an entry left behind expires with the presence TTL; a lease with its TTL).
CLEANUP_TIMEOUT = 2.0
#: The gap members see when stored messages skipped an offset and the history cannot fill it.
SKIPPED = "stored messages were lost on their way and the history no longer has them"
#: How often a room whose presence could not be read retries, at most.
RESYNC_RETRY = 1.0


@dataclass(frozen=True)
class RoomSettings:
    """What every room of one :class:`~trioweb.rooms.Rooms` shares."""

    hub: Broadcast
    store: RoomStore
    grace: float
    lease_ttl: float
    max_buffer: int
    on_overflow: OverflowPolicy
    tasks: list[RoomTask] = field(default_factory=list)
    owner_tasks: list[RoomTask] = field(default_factory=list)


class Room:
    """A room, as this process sees it while it has members in it.

    - :attr:`nursery`: the room's scope. Tasks started there are cancelled when the last local
      member leaves (after the grace period).
    - :attr:`presence`: who is in the room across every process, and its changes.
    - :attr:`state`: the room's shared state, with atomic updates.
    - :meth:`publish` reaches every member in every process; :meth:`send_local` the members of
      this process only (for what each process computes itself, such as a presence list).
    - :attr:`lease`: set while this process owns the room (its owner tasks run here).
    """

    def __init__(self, name: str, settings: RoomSettings) -> None:
        #: The room's name.
        self.name = name
        #: What all rooms of its :class:`~trioweb.rooms.Rooms` share.
        self.settings = settings
        #: Who is present, in every process.
        self.presence = Presence()
        #: The messages kept for members that resume.
        self.history = RoomHistory(self)
        #: The shared state.
        self.state = RoomState(self)
        #: The lease, while this process owns the room.
        self.lease: Lease | None = None
        #: The hub topics of the room.
        self.topics: Topics = settings.store.topics(name)
        self._nursery: trio.Nursery | None = None
        self._members: dict[str, Member] = {}
        # The local members' subscriptions: the relay task delivers into it.
        self._fanout = Fanout()
        # Members and joins in progress: the room stays open while there are any.
        self._users = 0
        self._users_changed = trio.Event()
        self._ready = trio.Event()
        self._failure: RoomFailed | RoomUnavailable | None = None
        self._released = trio.Event()
        #: False once the room is closing or failed: the next join opens a new one.
        self.open = True

    def __repr__(self) -> str:
        return f"<Room {self.name!r}: {len(self._members)} here, {len(self.presence)} in all>"

    @property
    def nursery(self) -> trio.Nursery:
        """The room's nursery: what runs in it ends when the room closes in this process."""
        if self._nursery is None:
            raise RuntimeError(f"room {self.name!r} is not open yet")
        return self._nursery

    @property
    def members(self) -> list[Member]:
        """The members of this room in this process."""
        return list(self._members.values())

    async def publish(self, message: Any) -> bool:
        """Send ``message`` (``str``, ``bytes`` or JSON) to every member in every process;
        ``False`` if the broker is unreachable (see :meth:`Broadcast.publish`)."""
        return await self.settings.hub.publish(self.topics.messages, message)

    def send_local(self, message: Any) -> None:
        """Put ``message`` in the queue of every member of this room in this process, now."""
        self._fanout.deliver(self.name, encode(message))

    async def time(self) -> float:
        """The store's clock in seconds (Redis's, shared by every process; trio's in-process):
        use it for deadlines that must survive a change of owner."""
        try:
            return await self.settings.store.now()
        except self.settings.store.errors as exc:
            raise RoomUnavailable(self.name, describe(exc)) from exc

    # -- members ------------------------------------------------------------------------

    @asynccontextmanager
    async def membership(
        self, user: str, meta: dict[str, Any], since: str | None = None
    ) -> AsyncIterator[Member]:
        """A member of this room for the block (see :meth:`Rooms.join`, which opens the room
        and checks the names first)."""
        self._claim()
        entry = PresenceEntry(secrets.token_hex(8), user, meta)
        messages = Subscription(self.name, self.settings.max_buffer, self.settings.on_overflow)
        member = Member(self, entry, messages)
        store = self.settings.store
        announced = False
        try:
            await self._wait_ready()
            self._members[member.id] = member
            self._fanout.add(messages)  # the room's messages from now on
            announced = True  # from here, the store may have it even if we are cancelled
            try:
                await store.join(self.name, entry)
            except store.errors as exc:
                raise RoomUnavailable(self.name, describe(exc)) from exc
            self.presence.add([entry])
            if since is not None:
                # After the member's queue is filled (from the start of the join on): what the
                # history has, then the live messages it has not (see Member.forward_to).
                member.resume(await self.history.recover(since), since)
            with member.cancellable():
                yield member
        finally:
            self._members.pop(member.id, None)
            self._fanout.remove(messages)
            if announced:
                # Out of the view now, and kept out until its leave's announcement.
                self.presence.depart(member.id)
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                    try:
                        if not await store.leave(self.name, member.id):
                            # The store never had it (the join was cancelled before it got
                            # there): no leave will be announced to end its departure.
                            self.presence.remove([member.id])
                    except store.errors as exc:
                        # Not refreshed any more, the entry expires within the presence TTL.
                        logger.debug("room %r: leave not recorded (%s)", self.name, describe(exc))
            self._unclaim()
        if member.failure is not None:
            raise member.failure

    def _claim(self) -> None:
        """A join is on its way: keep the room open."""
        self._users += 1
        self._users_changed.set()

    def _unclaim(self) -> None:
        """A join ended (or never completed)."""
        self._users -= 1
        self._users_changed.set()
        if self._users == 0 and self.settings.grace <= 0:
            # Closed from this moment: the next join opens a new room, even while this one's
            # task still finishes its cleanup.
            self.open = False

    async def _wait_ready(self) -> None:
        """Wait until the room is open; raise what made it fail to open."""
        await self._ready.wait()
        if self._failure is not None:
            raise copy.copy(self._failure)  # each waiter its own (a traceback per task)

    # -- life -----------------------------------------------------------------------------

    async def live(self) -> None:
        """Open the room, run it while it has users, then close it (run by :class:`Rooms`).

        A failure is the room's, never its caller's: it is logged, and the room's members and
        the joins waiting for it end with :class:`RoomFailed` (a task raised) or
        :class:`RoomUnavailable` (the store was out of reach). Cancelled (the rooms are
        stopping), they end with :class:`RoomUnavailable`, and the cancellation goes on.
        """
        try:
            await self._run()
        except BaseException as exc:
            errors = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
            if not errors:
                self._fail(RoomUnavailable(self.name, "the rooms stopped"))
                raise
            unavailable = [e for e in errors if isinstance(e, RoomUnavailable)]
            if len(unavailable) == len(errors):
                logger.warning("room %r closed: %s", self.name, unavailable[0].detail)
                self._fail(unavailable[0])
            else:
                logger.error("room %r failed; its members are closed", self.name, exc_info=exc)
                self._fail(RoomFailed(self.name, "; ".join(describe(e) for e in errors)))

    async def _run(self) -> None:
        settings = self.settings
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._fanout.wake_subscribers)
                # The two topics' subscriptions at once: each waits for the broker's answer.
                async with trio.open_nursery() as starting:
                    starting.start_soon(nursery.start, self._relay)
                    starting.start_soon(nursery.start, self._follow_presence)
                self._nursery = nursery
                if settings.owner_tasks:
                    await nursery.start(
                        self._guarded,
                        hold_ownership,
                        self,
                        settings.owner_tasks,
                        self._released_event,
                        name=hold_ownership,
                    )
                # Each task runs up to its first checkpoint before the first member is in:
                # a task that starts with ``room.presence.changes()`` sees every join.
                for task in settings.tasks:
                    await nursery.start(self._guarded, task, self, name=task)
                self._ready.set()
                await self._stay_while_used()
                self.open = False
                nursery.cancel_scope.cancel()
        finally:
            self.open = False

    def _fail(self, failure: RoomFailed | RoomUnavailable) -> None:
        """The room ended on an error (or under the stopping rooms): joins waiting for it
        raise ``failure``, and its members' blocks are cancelled with it."""
        self.open = False
        self._failure = failure
        self._ready.set()
        for member in list(self._members.values()):
            member.fail(copy.copy(failure))

    async def _guarded(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run a task of the room's; if it fails, the room is closed from that moment (the next
        join opens a new one), while its other tasks are being cancelled."""
        task_status.started()
        try:
            await fn(*args)
        except BaseException as exc:
            if any(not isinstance(e, trio.Cancelled) for e in leaves(exc)):
                self.open = False
            raise

    async def _stay_while_used(self) -> None:
        grace = self.settings.grace
        while True:
            if self._users == 0:
                if grace <= 0:
                    return
                self._users_changed = trio.Event()
                with trio.move_on_after(grace):
                    await self._users_changed.wait()
                if self._users == 0:
                    return
            self._users_changed = trio.Event()
            await self._users_changed.wait()

    async def _relay(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The room's messages, subscribed once per process, to each local member's queue.

        Pub/sub loses what is published while the broker connection is down (a Gap). The
        stored messages lost that way are read back from the history, once for the whole
        process, and delivered in their place, in order; live ones the history already gave
        are skipped. Only if the history cannot say for sure (the process had relayed no
        stored message yet, or the history moved past) do the members see the Gap.
        """
        hub, fanout, name = self.settings.hub, self._fanout, self.name
        started = False
        last: int | None = None  # the last stored message's offset delivered
        skip_through: int | None = None  # live messages up to this one came from the history
        while True:
            try:
                async with hub.subscribe(
                    self.topics.messages, max_buffer=RELAY_BUFFER, on_overflow="close"
                ) as messages:
                    if not started:
                        started = True
                        task_status.started()
                    async for item in messages:
                        offset = None if isinstance(item, Gap) else offset_of(item)
                        if offset is not None and skip_through is not None:
                            if offset <= skip_through:
                                continue  # the history gave it already
                            skip_through = None
                        # A Gap, or a stored message past the next offset (offsets of one
                        # history follow each other: a jump is a hole, whether or not the
                        # hub saw a gap): fill it from the history.
                        hole = isinstance(item, Gap) or (
                            offset is not None and last is not None and offset > last + 1
                        )
                        if hole:
                            recovered = await self._recover_after(last)
                            if recovered is None:
                                reason = item.reason if isinstance(item, Gap) else SKIPPED
                                fanout.gap(name, reason)
                            else:
                                for message in recovered:
                                    fanout.deliver(name, message)
                                    last = skip_through = offset_of(message)
                                if offset is None or (
                                    skip_through is not None and offset <= skip_through
                                ):
                                    continue
                        if isinstance(item, Gap):
                            continue
                        if offset is not None:
                            last = offset
                        fanout.deliver(name, item)
            except SubscriberTooSlow:
                # The relay never waits, so this takes a starved process: say so, go on.
                fanout.gap(name, "the room's relay fell behind")

    async def _recover_after(self, last: int | None) -> tuple[str, ...] | None:
        """The stored messages after offset ``last``, if the history has them all."""
        if last is None:
            return None
        try:
            recovery = await self.history.recover(str(last))
        except RoomUnavailable:
            return None
        return recovery.messages if recovery.exact else None

    def _released_event(self) -> trio.Event:
        """An event set when the room's owner gives up its lease (a fresh one each call)."""
        self._released = trio.Event()
        return self._released

    async def _follow_presence(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep :attr:`presence` true: announcements subscribed first, then the snapshot."""
        store = self.settings.store
        async with self.settings.hub.subscribe(
            self.topics.presence, max_buffer=RELAY_BUFFER, on_overflow="drop_oldest"
        ) as announcements:
            try:
                self.presence.replace(await store.presence(self.name))
            except store.errors as exc:
                raise RoomUnavailable(self.name, describe(exc)) from exc
            task_status.started()
            dropped = announcements.dropped
            async for item in announcements:
                if isinstance(item, Gap) or announcements.dropped != dropped:
                    dropped = announcements.dropped
                    await self._resync()
                    continue
                try:
                    announcement = parse_announcement(item)
                except ValueError:
                    logger.warning("ignored a message on %r that is not trioweb's", item)
                    continue
                if announcement.released:
                    self._released.set()
                self.presence.add(announcement.joined)
                self.presence.remove(announcement.left)

    async def _resync(self) -> None:
        """Read the whole presence again (after a gap), retrying while the store is down."""
        store = self.settings.store
        while True:
            try:
                entries = await store.presence(self.name)
            except store.errors as exc:
                logger.debug("room %r: presence not readable yet: %s", self.name, describe(exc))
                await trio.sleep(RESYNC_RETRY)
                continue
            # Our own members are present even if the store lost them: the heartbeat puts
            # them back.
            local = [member.entry for member in self._members.values()]
            self.presence.replace([*entries, *local])
            return
