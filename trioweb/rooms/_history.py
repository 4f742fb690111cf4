"""A room's history: messages kept with an offset, so that a client that reconnects gets what it
missed, exactly once, in order.

An offset is a decimal integer in a string, strictly increasing per room in the order the
messages were published; clients treat it as opaque. A stored message is a JSON object whose
first key is ``"offset"`` (put there by the store, in the same step that stores and publishes
it), so that a client reads it from any message, and a member's forwarder can tell, from the
message's first bytes alone, whether the live stream has passed what a replay already sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._state import describe
from ._store import OFFSET_PREFIX, Recovery, object_text
from .errors import RoomUnavailable

if TYPE_CHECKING:
    from ._room import Room

__all__ = ["RoomHistory", "offset_of", "parse_offset"]

#: Offsets are at most this many digits (a 64-bit counter).
MAX_DIGITS = 20


def parse_offset(offset: object) -> int | None:
    """The offset a client sent, as a number; ``None`` if it is not one this server gives."""
    if not isinstance(offset, str) or not 0 < len(offset) <= MAX_DIGITS:
        return None
    return int(offset) if offset.isascii() and offset.isdigit() else None


def offset_of(message: str | bytes) -> int | None:
    """The offset of a stored message, read from its first bytes; ``None`` for a message that
    was not stored (a tick, a presence list)."""
    if not isinstance(message, str) or not message.startswith(OFFSET_PREFIX):
        return None
    end = message.find('"', len(OFFSET_PREFIX))
    digits = message[len(OFFSET_PREFIX) : end]
    # ASCII only: str.isdigit() also takes digits int() refuses ("²"), or reads (Arabic-Indic).
    return int(digits) if end > 0 and digits.isascii() and digits.isdigit() else None


class RoomHistory:
    """The room's stored messages: :meth:`append` to publish one with an offset, :meth:`recover`
    to read what came after an offset (a join with ``since=`` does it for you)."""

    def __init__(self, room: Room) -> None:
        self._room = room

    async def append(self, message: Any) -> str:
        """Publish ``message`` (a JSON object: a ``dict``, or its text) to the room and keep it
        in the room's history, bounded to the rooms' ``history`` length; return its offset.

        Every member gets it with ``"offset"`` as its first key. Unlike :meth:`Room.publish`,
        it raises :class:`RoomUnavailable` if the store cannot be reached: a message meant to
        be kept is never lost silently.
        """
        room = self._room
        store = room.settings.store
        body = object_text(message)
        try:
            return await store.append(room.name, body)
        except store.errors as exc:
            raise RoomUnavailable(room.name, describe(exc)) from exc

    async def recover(self, since: str) -> Recovery:
        """The messages stored after offset ``since``, and whether that is everything published
        since (``exact``); not exact for an offset this room never gave, or one so old that
        messages after it were trimmed."""
        room = self._room
        store = room.settings.store
        after = parse_offset(since)
        if after is None:
            return Recovery(False)
        try:
            return await store.recover(room.name, after)
        except store.errors as exc:
            raise RoomUnavailable(room.name, describe(exc)) from exc
