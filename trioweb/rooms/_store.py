"""What a room store is: the shared truth about rooms, behind one small protocol.

A store keeps what every process must agree on: who is present in a room, which process owns
it (a lease with a fencing token), and the room's state document. It announces presence
changes on the room's presence topic of the broadcast hub, so that every process's view
follows. The in-process store (:mod:`._memory`) keeps it in a dict; the Redis store
(:mod:`.redis`) keeps it in Redis, each change one Lua script so that it is atomic across
processes. The room runtime imports this module only, never a store's insides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .._json import json_text

__all__ = [
    "OFFSET_PREFIX",
    "Announcement",
    "Grant",
    "Lease",
    "PresenceEntry",
    "Recovery",
    "RoomStore",
    "StateWrite",
    "Topics",
    "entry_from_json",
    "joined",
    "left",
    "object_text",
    "parse_announcement",
    "released",
    "with_offset",
]


@dataclass(frozen=True)
class PresenceEntry:
    """One presence in a room: one joined connection, in whichever process it lives.

    A user with two tabs open is two entries with the same :attr:`user`; count users with
    ``len({entry.user for entry in entries})`` or :meth:`Presence.users`.
    """

    #: Unique per join, across processes and restarts.
    id: str
    #: Who this is, as the app named them at the join (a user name or id).
    user: str
    #: The app's metadata for this presence (a role, a device), as JSON-able values.
    meta: dict[str, Any]


@dataclass(frozen=True)
class Lease:
    """A room's ownership, held by one process at a time until it expires or is released."""

    #: The room owned.
    room: str
    #: Unique per acquisition, and increasing: the fencing token state writes are checked
    #: against, so an owner that lost its lease (a long pause) cannot write any more.
    token: str
    #: The fencing number inside :attr:`token`: each new owner of the room gets a higher one,
    #: as long as the store keeps the room's counter (``state_ttl`` after the room's last use;
    #: a Redis that lost its data starts again from 1). Writes are fenced by the whole token.
    fence: int


@dataclass(frozen=True)
class Grant:
    """The answer to an acquisition: the lease, or how long until the current one expires."""

    #: The lease, if this process got it.
    lease: Lease | None
    #: Seconds until the current owner's lease expires, if it was not granted.
    retry_after: float


@dataclass(frozen=True)
class StateWrite:
    """The outcome of a compare-and-set of a room's state."""

    #: ``"applied"``, ``"conflict"`` (the state changed since it was read: read again) or
    #: ``"fenced"`` (the lease given is no longer the room's: the write was refused).
    outcome: str
    #: The version the state has now.
    version: int
    #: The state as it is now, when the write was not applied.
    current: dict[str, Any] | None = None
    #: The offset of the announcement in the room's history, if it was stored there.
    offset: str | None = None


@dataclass(frozen=True)
class Recovery:
    """What a room's history holds after an offset a client last saw."""

    #: True if the history has everything published after that offset: nothing was trimmed in
    #: between, and the offset is one this room gave (not from before its history was lost).
    exact: bool
    #: Those messages, oldest first (each a JSON object text with its ``"offset"``), when exact.
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topics:
    """The broadcast topics of a room: its messages, and its presence announcements."""

    messages: str
    presence: str


class RoomStore(Protocol):
    """Where rooms' shared truth lives. Every method may raise a broker error while the store
    is unreachable (see :attr:`errors`); none of them waits for anything else."""

    #: The exception types that mean "the store is unreachable right now", never a bug.
    errors: tuple[type[BaseException], ...]

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Connect, report started, then keep the connection until cancelled."""

    async def check(self) -> str | None:
        """``None`` if the store answers, else why not."""

    def topics(self, room: str) -> Topics:
        """The hub topics of ``room``."""

    async def now(self) -> float:
        """The store's clock, in seconds: the same for every process that shares the store."""

    # -- presence -------------------------------------------------------------------------

    async def join(self, room: str, entry: PresenceEntry) -> None:
        """Add ``entry`` to the room's presence and announce it."""

    async def leave(self, room: str, entry_id: str) -> bool:
        """Remove an entry from the room's presence and announce it, if it was there; False if
        it was not (nothing is announced then)."""

    async def heartbeat(self, rooms: list[tuple[str, list[PresenceEntry]]]) -> None:
        """For each room and this process's entries in it: keep them alive (adding back, and
        announcing, any that expired), and remove, announcing, the entries of other processes
        that expired. One call for many rooms; it fails as a whole."""

    async def presence(self, room: str) -> list[PresenceEntry]:
        """Every live entry of the room, oldest first."""

    # -- ownership ------------------------------------------------------------------------

    async def acquire(self, room: str, ttl: float) -> Grant:
        """Take the room's lease for ``ttl`` seconds if nobody holds it."""

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend ``lease`` by ``ttl`` seconds from now; False if it is no longer ours."""

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` up (if it is still ours) and announce it, so another process can
        take the room over at once."""

    # -- state ----------------------------------------------------------------------------

    # -- history --------------------------------------------------------------------------

    async def append(self, room: str, body: str) -> str:
        """Give ``body`` (a JSON object's text) the room's next offset, store it in the room's
        history (bounded) and publish it to the room's messages topic, in one step; return
        the offset."""

    async def recover(self, room: str, since: int) -> Recovery:
        """What the room's history holds after offset ``since``."""

    async def read_state(self, room: str) -> tuple[int, dict[str, Any]]:
        """The room's state and its version (0 and ``{}`` for a room never written)."""

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
        """Replace the state if its version is still ``version`` (and, with ``lease``, if the
        lease is still the room's); on success publish ``announce`` to the room's messages
        topic in the same step, so that announcements are in the order of the writes. With
        ``history``, ``announce`` (a JSON object's text) is stored as by :meth:`append`."""


# -- what a store announces on a room's presence topic (JSON text) ---------------------------
#
#   {"joined": [{"id": ..., "user": ..., "meta": {...}}, ...]}
#   {"left": ["id", ...]}
#   {"released": "token"}       the owner gave the lease up: contenders may try at once
#
# The Redis store's scripts write the same shapes (with cjson).


@dataclass(frozen=True)
class Announcement:
    """A presence announcement, parsed."""

    joined: tuple[PresenceEntry, ...] = ()
    left: tuple[str, ...] = ()
    released: bool = False


def joined(entries: list[PresenceEntry]) -> str:
    """The announcement that ``entries`` joined."""
    return json_text({"joined": [{"id": e.id, "user": e.user, "meta": e.meta} for e in entries]})


def left(entry_ids: list[str]) -> str:
    """The announcement that the entries ``entry_ids`` left."""
    return json_text({"left": entry_ids})


def released(token: str) -> str:
    """The announcement that the lease ``token`` was given up."""
    return json_text({"released": token})


def entry_from_json(data: Any) -> PresenceEntry:
    """A :class:`PresenceEntry` from its JSON form; ``ValueError`` if it is not one."""
    if not isinstance(data, dict):
        raise ValueError("a presence entry is a JSON object")
    entry_id, user, meta = data.get("id"), data.get("user"), data.get("meta")
    if not isinstance(entry_id, str) or not isinstance(user, str):
        raise ValueError("a presence entry needs a string id and user")
    return PresenceEntry(entry_id, user, meta if isinstance(meta, dict) else {})


def parse_announcement(message: str | bytes) -> Announcement:
    """Parse a presence announcement; ``ValueError`` for anything else."""
    try:
        data = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a presence announcement: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a presence announcement")
    if "joined" in data and isinstance(data["joined"], list):
        return Announcement(joined=tuple(entry_from_json(e) for e in data["joined"]))
    if "left" in data and isinstance(data["left"], list):
        return Announcement(left=tuple(str(i) for i in data["left"]))
    if "released" in data:
        return Announcement(released=True)
    raise ValueError("not a presence announcement")


# -- what a stored message looks like --------------------------------------------------------

#: How every stored message begins: its offset is its JSON object's first key. (The Redis
#: store's scripts build the same shape.)
OFFSET_PREFIX = '{"offset":"'


def with_offset(body: str, offset: int) -> str:
    """``body``, a JSON object's text, with ``"offset"`` put first."""
    if body == "{}":
        return f'{OFFSET_PREFIX}{offset}"}}'
    return f'{OFFSET_PREFIX}{offset}",{body[1:]}'


def object_text(message: Any) -> str:
    """``message`` as the text of a JSON object without an ``"offset"`` key, or ``TypeError``
    / ``ValueError`` saying why it cannot be stored."""
    if isinstance(message, dict):
        if "offset" in message:
            raise ValueError('a stored message gets its "offset" from the room: leave it out')
        return json_text(message)
    if isinstance(message, str):
        try:
            parsed = json.loads(message)
        except ValueError:
            raise ValueError("a stored message is a JSON object: this text is not JSON") from None
        if isinstance(parsed, dict):
            return object_text(parsed)
    raise TypeError(f"a stored message is a JSON object (a dict), not {type(message).__name__}")
