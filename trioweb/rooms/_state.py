"""A room's shared state: a small JSON document per room, with atomic updates across processes.

An update is optimistic: read the state and its version, compute the new state, and write it
only if the version is unchanged (the store's compare-and-set), else read again and retry. The
write's announcement, if any, is published by the store in the same step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..broadcast.hub import encode
from ._store import object_text
from .errors import LeaseLost, RoomUnavailable

if TYPE_CHECKING:
    from ._room import Room

__all__ = ["RoomState", "StateUpdate", "describe"]


def describe(exc: BaseException) -> str:
    """An exception in one line, for logs and error details."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class StateUpdate:
    """What :meth:`RoomState.update` did."""

    #: True if the state was written (the function returned a new state).
    applied: bool
    #: The state after the update (the current one if nothing was written).
    state: dict[str, Any]
    #: The state's version after the update.
    version: int
    #: The announcement's offset in the room's history (with ``history=True``, when written).
    offset: str | None = None


class RoomState:
    """A small JSON document per room, shared by every process, with atomic updates.

    ``update(fn)`` reads the state, calls ``fn`` with a copy, and writes what ``fn`` returns
    only if nobody wrote in between (compare-and-set); otherwise it reads again and calls
    ``fn`` again. So "accept this bid only if it is higher than the high bid" is one atomic
    step across processes. The state outlives owners and members (see ``state_ttl``).
    """

    def __init__(self, room: Room) -> None:
        self._room = room

    async def get(self) -> dict[str, Any]:
        """The room's current state (``{}`` before the first write)."""
        room = self._room
        try:
            _, state = await room.settings.store.read_state(room.name)
        except room.settings.store.errors as exc:
            raise RoomUnavailable(room.name, describe(exc)) from exc
        return state

    async def update(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        announce: Callable[[dict[str, Any]], Any] | None = None,
        fenced: bool = False,
        history: bool = False,
        attempts: int = 100,
    ) -> StateUpdate:
        """Apply ``fn`` to the state atomically; ``fn`` returns the new state, or ``None`` to
        leave it as it is (and announce nothing).

        ``announce(new_state)`` gives a message published to the room in the same atomic step
        as the write, so that every member sees announcements in the order of the writes
        (concurrent bids from two processes arrive in the order they were accepted).
        ``fenced=True`` (for owner tasks) refuses the write, raising :class:`LeaseLost`, if
        this process no longer holds the room's lease. ``history=True`` keeps the
        announcement (a JSON object) in the room's history, as
        :meth:`RoomHistory.append` does: it gets an offset (``StateUpdate.offset``). ``fn`` may
        be called several times under contention: keep it free of side effects.
        """
        room = self._room
        store = room.settings.store
        lease = room.lease if fenced else None
        if fenced and lease is None:
            raise LeaseLost(f"this process does not own room {room.name!r}")
        try:
            version, current = await store.read_state(room.name)
            for _ in range(attempts):
                new = fn(copy.deepcopy(current))
                if new is None:
                    return StateUpdate(False, current, version)
                message: str | bytes | None = None
                if announce is not None:
                    said = announce(new)
                    message = object_text(said) if history else encode(said)
                written = await store.write_state(
                    room.name, version, new, lease=lease, announce=message, history=history
                )
                if written.outcome == "applied":
                    return StateUpdate(True, new, written.version, written.offset)
                if written.outcome == "fenced":
                    raise LeaseLost(f"this process no longer owns room {room.name!r}")
                version, current = written.version, written.current or {}
        except store.errors as exc:
            raise RoomUnavailable(room.name, describe(exc)) from exc
        raise RuntimeError(
            f"room {room.name!r}: the state changed under {attempts} updates in a row"
        )
