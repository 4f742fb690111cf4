"""One connection's membership of a room: its queue of the room's messages, its presence
entry, the scope of its block, and the replay a resumed member gets first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import trio

from ..broadcast import Gap, Subscription
from ._history import offset_of, parse_offset
from ._store import PresenceEntry, Recovery
from .errors import RoomFailed, RoomUnavailable

if TYPE_CHECKING:
    from ..websocket import WebSocket
    from ._room import Room

__all__ = ["Member"]


class Member:
    """One connection's membership of a room, from :meth:`Rooms.join`.

    The room's messages reach :attr:`messages` from the join on, and wait there. Send the
    member what it needs first yourself (the room's current state, say), then start
    ``nursery.start_soon(member.forward_to, ws)``: nothing published since the join is lost,
    and nothing overtakes your first message. Or read :attr:`messages` yourself.
    """

    __slots__ = ("_after", "_failure", "_replay", "_scope", "entry", "messages", "recovery", "room")

    def __init__(self, room: Room, entry: PresenceEntry, messages: Subscription) -> None:
        #: The room joined.
        self.room = room
        #: This member's presence entry (its id, user and metadata).
        self.entry = entry
        #: What is published to the room, from the join on: ``str``, ``bytes`` or a
        #: :class:`~trioweb.broadcast.Gap`.
        self.messages = messages
        #: With a join's ``since``: whether the history had everything after it, and what.
        #: ``None`` for a join without ``since``.
        self.recovery: Recovery | None = None
        self._scope: trio.CancelScope | None = None
        self._failure: RoomFailed | RoomUnavailable | None = None
        # What forward_to sends before the live messages, and the offset up to which live
        # messages are already in it (None: nothing to skip).
        self._replay: list[str] = []
        self._after: int | None = None

    def __repr__(self) -> str:
        return f"<Member {self.entry.user!r} of room {self.room.name!r}>"

    def resume(self, recovery: Recovery, since: str | None = None) -> None:
        """Send ``recovery``'s messages first, and skip the live ones they already hold; with
        ``since`` (the offset recovered from), those the client had before, too."""
        self.recovery = recovery
        if recovery.exact:
            self._replay = list(recovery.messages)
            # Up to date (nothing to replay), the client still had the messages up to `since`:
            # one may reach this process's relay after the join (the client got it through
            # another process), and must not be sent again.
            last = recovery.messages[-1] if recovery.messages else None
            self._after = offset_of(last) if last is not None else parse_offset(since)

    @property
    def id(self) -> str:
        """The presence entry's id: unique per join."""
        return self.entry.id

    @property
    def user(self) -> str:
        """Who this member is."""
        return self.entry.user

    async def forward_to(
        self, ws: WebSocket, *, on_gap: Callable[[Gap], Awaitable[Any]] | None = None
    ) -> None:
        """Send the room's messages to ``ws`` until the member leaves (see
        :meth:`~trioweb.broadcast.Subscription.forward_to`: a member too slow for its buffer
        is closed with 1013 under the ``"close"`` policy).

        A resumed member (``join(..., since=)``) first gets what the history held after its
        offset; the live messages that the replay already held are skipped.
        """
        replay, self._replay = self._replay, []
        for message in replay:
            await ws.send_frame(message)
        after, self._after = self._after, None
        while after is not None:
            # Until the live stream passes the replay's last offset (it is in offset order).
            try:
                item = await self.messages.receive()
            except trio.EndOfChannel:
                return
            if isinstance(item, Gap):
                if on_gap is not None:
                    await on_gap(item)
                continue
            offset = offset_of(item)
            if offset is not None and offset <= after:
                continue
            await ws.send_frame(item)
            if offset is not None:
                after = None
        await self.messages.forward_to(ws, on_gap=on_gap)

    @property
    def failure(self) -> RoomFailed | RoomUnavailable | None:
        """Why the room ended this membership, if it ended under it: :class:`RoomFailed` if it
        failed, :class:`RoomUnavailable` if it lost the store or the rooms stopped."""
        return self._failure

    @contextmanager
    def cancellable(self) -> Iterator[None]:
        """The scope of the member's block: cancelled if the room ends under it."""
        with trio.CancelScope() as scope:
            self._scope = scope
            if self._failure is not None:
                scope.cancel()  # the room ended while the join was still on its way
            yield

    def fail(self, failure: RoomFailed | RoomUnavailable) -> None:
        """The room ended under this member: cancel its block, which raises ``failure``
        (called by the room)."""
        self._failure = failure
        if self._scope is not None:
            self._scope.cancel()
