"""A process's view of who is present in one room, and the stream of its changes.

The view is rebuilt from the store's snapshot when the room opens in this process (and after a
gap in the announcements), and follows the store's announcements in between. Applying an
announcement is idempotent: a join already seen, or a leave of an entry already gone, changes
nothing, so the order "subscribe to announcements, then read the snapshot, then apply what was
announced meanwhile" converges on the truth.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import trio

from ._store import PresenceEntry

__all__ = ["Presence", "PresenceChange", "PresenceChanges"]


@dataclass(frozen=True)
class PresenceChange:
    """What changed in a room's presence since the watcher last looked."""

    #: Entries that joined (and are still there).
    joined: tuple[PresenceEntry, ...]
    #: Entries that left (and had been seen).
    left: tuple[PresenceEntry, ...]


class PresenceChanges:
    """An async iterator of :class:`PresenceChange`, from :meth:`Presence.changes`.

    Changes that pile up while the reader is busy are merged into one: an entry that joined and
    left in between is in neither list. So a slow reader never falls behind, and a burst of
    joins (a reconnect storm) costs it one wake-up.
    """

    __slots__ = ("__weakref__", "_event", "_joined", "_left")

    def __init__(self) -> None:
        self._joined: dict[str, PresenceEntry] = {}
        self._left: dict[str, PresenceEntry] = {}
        self._event = trio.Event()

    def _add(self, entry: PresenceEntry) -> None:
        if self._left.pop(entry.id, None) is None:
            self._joined[entry.id] = entry
        self._event.set()

    def _remove(self, entry: PresenceEntry) -> None:
        if self._joined.pop(entry.id, None) is None:
            self._left[entry.id] = entry
        self._event.set()

    def __aiter__(self) -> PresenceChanges:
        return self

    async def __anext__(self) -> PresenceChange:
        while not (self._joined or self._left):
            if self._event.is_set():
                self._event = trio.Event()
            await self._event.wait()
        change = PresenceChange(tuple(self._joined.values()), tuple(self._left.values()))
        self._joined.clear()
        self._left.clear()
        return change


class Presence:
    """Who is in a room right now, across every process sharing the store.

    ``len(room.presence)`` counts presences (connections); :meth:`users` counts people.
    """

    def __init__(self) -> None:
        self._entries: dict[str, PresenceEntry] = {}
        self._watchers: weakref.WeakSet[PresenceChanges] = weakref.WeakSet()
        # This process's members that left before their join's announcement came back: that
        # late announcement must not bring them back (their leave's announcement follows it).
        self._departed: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[PresenceEntry]:
        return iter(list(self._entries.values()))

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def entries(self) -> list[PresenceEntry]:
        """Every presence in the room."""
        return list(self._entries.values())

    def users(self) -> list[str]:
        """The distinct users present, sorted: a user with two tabs open is listed once."""
        return sorted({entry.user for entry in self._entries.values()})

    def by_user(self) -> dict[str, list[PresenceEntry]]:
        """The presences grouped by user (Phoenix's ``metas``)."""
        grouped: dict[str, list[PresenceEntry]] = {}
        for entry in self._entries.values():
            grouped.setdefault(entry.user, []).append(entry)
        return grouped

    def changes(self) -> PresenceChanges:
        """Watch the presence: an async iterator of every change from now on.

        Read the current presence after calling this (not before), so that nothing falls in
        between. An iterator nobody holds any more is forgotten.
        """
        watcher = PresenceChanges()
        self._watchers.add(watcher)
        return watcher

    # -- kept up to date by the room ------------------------------------------------------

    def add(self, entries: Iterable[PresenceEntry]) -> None:
        """These entries are present (already known ones change nothing)."""
        for entry in entries:
            if entry.id in self._entries or entry.id in self._departed:
                continue
            self._entries[entry.id] = entry
            for watcher in self._watchers:
                watcher._add(entry)

    def remove(self, entry_ids: Iterable[str]) -> None:
        """These entries are gone (unknown ones change nothing)."""
        for entry_id in entry_ids:
            self._departed.discard(entry_id)
            entry = self._entries.pop(entry_id, None)
            if entry is None:
                continue
            for watcher in self._watchers:
                watcher._remove(entry)

    def depart(self, entry_id: str) -> None:
        """This process's member ``entry_id`` left, and its leave will be announced: out of
        the view now, and kept out until that announcement."""
        self.remove([entry_id])
        self._departed.add(entry_id)

    def replace(self, entries: Iterable[PresenceEntry]) -> None:
        """The whole presence is ``entries``: announce the difference to the watchers."""
        self._departed.clear()
        fresh = {entry.id: entry for entry in entries}
        self.remove([entry_id for entry_id in self._entries if entry_id not in fresh])
        self.add(fresh.values())
