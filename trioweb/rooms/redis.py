"""The Redis (or Valkey) room store, through coredis on trio.

Every change is one Lua script, so that it is atomic across processes and its announcement
leaves in the same step (a write and its PUBLISH cannot be reordered by another process). The
scripts read the time from Redis (``TIME``), so that expiries do not depend on the clocks of
the processes. Keys, for a room NAME under the prefix P:

- ``P:presence:NAME``: sorted set, entry id -> expiry (Redis ms);
- ``P:members:NAME``: hash, entry id -> the entry as JSON;
- ``P:departed:NAME``: sorted set, ids that left recently -> until when they are remembered
  (a heartbeat delayed behind a leave must not bring the entry back);
- ``P:owner:NAME``: the lease: the owner's token, with the lease's time to live;
- ``P:fence:NAME``: the last fencing number handed out;
- ``P:state:NAME``: hash with the state document (``doc``, JSON) and its version (``v``);
- ``P:history:NAME``: stream of the stored messages, the offset as each entry's id, bounded
  to the rooms' ``history`` length;
- ``P:offsets:NAME``: the last offset given.

Presence keys expire on their own once no process refreshes them; the state and the fencing
counter live ``state_ttl`` after the room's last use: a write, the last heartbeat of a process
with members in it, or a renewal of its lease. Redis Cluster is not supported (a script's keys
would need one hash slot): one Redis server, or a primary with replicas (see the guide for what
a failover does to leases).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import coredis
import trio
from coredis.commands.script import Script

from .._json import json_text
from ..broadcast.errors import BrokerUnavailable
from ..broadcast.redis import BROKER_ERRORS, check_url, pack, ping, redact, run_client
from ._redis_scripts import (
    ACQUIRE,
    APPEND,
    HEARTBEAT,
    JOIN,
    LEAVE,
    PRESENCE,
    RECOVER,
    RELEASE,
    RENEW,
    TIME,
    WRITE_STATE,
)
from ._store import (
    Grant,
    Lease,
    PresenceEntry,
    Recovery,
    StateWrite,
    Topics,
    entry_from_json,
    joined,
    left,
    released,
)

__all__ = ["RedisStore"]

logger = logging.getLogger("trioweb.rooms")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _entry_json(entry: PresenceEntry) -> str:
    # json_text: a lone surrogate (which UTF-8, hence Redis, cannot take) is escaped.
    return json_text({"id": entry.id, "user": entry.user, "meta": entry.meta})


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisStore:
    """Rooms shared by every process connected to one Redis server."""

    #: The broker's errors, and "not connected" (before the store starts, after it stops).
    errors: tuple[type[BaseException], ...] = (*BROKER_ERRORS, BrokerUnavailable)

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        presence_ttl: float,
        state_ttl: float,
        history: int = 1000,
        connect_timeout: float = 5.0,
        command_timeout: float = 2.0,
    ) -> None:
        self.url = check_url(url)
        self._prefix = prefix
        # An entry lives three heartbeats (a quarter of the TTL each); the sweep of every
        # process with the room open runs with its heartbeat: a crashed process's entries
        # are gone from every view within the TTL.
        self._lifetime_ms = _ms(presence_ttl * 3 / 4)
        self._key_ttl_ms = _ms(max(presence_ttl * 4, 60.0))
        self._state_ttl_ms = _ms(state_ttl)
        self._history = history
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._client: coredis.Redis[bytes] | None = None
        # Part of every lease token: which process holds it (for operators reading Redis).
        self._tag = secrets.token_hex(6)

    def __repr__(self) -> str:
        return f"<RedisStore {redact(self.url)}>"

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Own the client for the store's life; ``BrokerUnavailable`` if Redis is unreachable."""

        async def serve(client: coredis.Redis[bytes], started: Callable[[], None]) -> None:
            self._client = client
            try:
                started()
                await trio.sleep_forever()
            finally:
                self._client = None

        await run_client(
            self.url,
            what="the room store",
            connect_timeout=self._connect_timeout,
            serve=serve,
            task_status=task_status,
        )

    async def check(self) -> str | None:
        """``None`` if Redis answers a PING, else why not."""
        return await ping(self._client)

    def _keys(self, kind: str, room: str) -> str:
        return f"{self._prefix}:{kind}:{room}"

    def topics(self, room: str) -> Topics:
        """``PREFIX:room:NAME`` and ``PREFIX:presence:NAME``."""
        return Topics(self._keys("room", room), self._keys("presence", room))

    async def _call(self, script: Script[Any], keys: list[str], args: list[Any]) -> Any:
        client = self._client
        if client is None:
            raise BrokerUnavailable("the room store is not connected")
        with trio.fail_after(self._command_timeout):
            return await script(keys, args, client=client)

    async def now(self) -> float:
        """Redis's clock (``TIME``), in seconds."""
        seconds, microseconds = await self._call(TIME, [], [])
        return int(seconds) + int(microseconds) / 1_000_000

    # -- presence -------------------------------------------------------------------------

    def _presence_keys(self, room: str) -> list[str]:
        return [self._keys("presence", room), self._keys("members", room)]

    def _departure_keys(self, room: str) -> list[str]:
        return [*self._presence_keys(room), self._keys("departed", room)]

    async def join(self, room: str, entry: PresenceEntry) -> None:
        """Add and announce ``entry`` in one script."""
        await self._call(
            JOIN,
            self._presence_keys(room),
            [
                entry.id,
                _entry_json(entry),
                self._lifetime_ms,
                self._key_ttl_ms,
                self.topics(room).presence,
                pack(joined([entry])),
            ],
        )

    async def leave(self, room: str, entry_id: str) -> bool:
        """Remove and announce the entry in one script, if it was there."""
        reply = await self._call(
            LEAVE,
            self._departure_keys(room),
            [entry_id, self.topics(room).presence, pack(left([entry_id])), self._key_ttl_ms],
        )
        return bool(reply == 1)

    async def heartbeat(self, rooms: list[tuple[str, list[PresenceEntry]]]) -> None:
        """For each room, refresh ours (and, with members here, the room's state), sweep
        everyone's expired entries, announce both: one script for all ``rooms``."""
        keys: list[str] = []
        args: list[Any] = [self._lifetime_ms, self._key_ttl_ms, pack(""), self._state_ttl_ms]
        for room, entries in rooms:
            keys += [
                *self._departure_keys(room),
                self._keys("state", room),
                self._keys("fence", room),
                *self._history_keys(room),
            ]
            args += [self.topics(room).presence, len(entries)]
            for entry in entries:
                args += [entry.id, _entry_json(entry)]
        await self._call(HEARTBEAT, keys, args)

    async def presence(self, room: str) -> list[PresenceEntry]:
        """The live entries (those whose expiry is still ahead on Redis's clock)."""
        live, flat = await self._call(PRESENCE, self._presence_keys(room), [])
        stored = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        entries = []
        for raw_id in live:
            data = stored.get(_text(raw_id))
            if data is None:
                continue
            try:
                entries.append(entry_from_json(json.loads(data)))
            except ValueError:
                logger.warning("ignored a presence entry of %r that is not trioweb's", room)
        return entries

    # -- ownership ------------------------------------------------------------------------

    async def acquire(self, room: str, ttl: float) -> Grant:
        """``SET NX PX`` with a new fencing number, in one script."""
        reply = await self._call(
            ACQUIRE,
            [self._keys("owner", room), self._keys("fence", room)],
            [self._tag, _ms(ttl), self._state_ttl_ms],
        )
        if reply[0] == 1:
            return Grant(Lease(room, _text(reply[2]), int(reply[1])), 0.0)
        remaining = int(reply[1])
        return Grant(None, remaining / 1000 if remaining > 0 else ttl)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Compare-and-extend; the room's state and fencing counter live on with it."""
        reply = await self._call(
            RENEW,
            [
                self._keys("owner", lease.room),
                self._keys("state", lease.room),
                self._keys("fence", lease.room),
            ],
            [lease.token, _ms(ttl), self._state_ttl_ms],
        )
        return bool(reply == 1)

    async def release(self, lease: Lease) -> None:
        """Compare-and-delete, and announce it."""
        await self._call(
            RELEASE,
            [self._keys("owner", lease.room)],
            [lease.token, self.topics(lease.room).presence, pack(released(lease.token))],
        )

    # -- history --------------------------------------------------------------------------

    def _history_keys(self, room: str) -> list[str]:
        return [self._keys("history", room), self._keys("offsets", room)]

    async def append(self, room: str, body: str) -> str:
        """Next offset, XADD (bounded), PUBLISH, in one script."""
        offset = await self._call(
            APPEND,
            self._history_keys(room),
            [body, self._history, self._state_ttl_ms, self.topics(room).messages, pack("")],
        )
        return _text(offset)

    async def recover(self, room: str, since: int) -> Recovery:
        """XRANGE after ``since``, if the stream still has everything after it."""
        reply = await self._call(RECOVER, self._history_keys(room), [since, self._history])
        if reply[0] != 1:
            return Recovery(False)
        return Recovery(True, tuple(_text(message) for message in reply[1:]))

    # -- state ----------------------------------------------------------------------------

    async def read_state(self, room: str) -> tuple[int, dict[str, Any]]:
        """``HMGET v doc``."""
        client = self._client
        if client is None:
            raise BrokerUnavailable("the room store is not connected")
        with trio.fail_after(self._command_timeout):
            version, doc = await client.hmget(self._keys("state", room), ["v", "doc"])
        return (int(version) if version else 0), (json.loads(doc) if doc else {})

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
        """Compare-and-set (and check the fencing token), store ``announce`` in the history if
        asked, publish it, in one script."""
        framed = b"" if announce is None else pack(announce)
        reply = await self._call(
            WRITE_STATE,
            [self._keys("state", room), self._keys("owner", room), *self._history_keys(room)],
            [
                version,
                json_text(state),
                self._state_ttl_ms,
                "" if lease is None else lease.token,
                self.topics(room).messages,
                framed[:1],
                framed[1:],
                self._history if history else 0,
            ],
        )
        if reply[0] == 1:
            offset = _text(reply[2])
            return StateWrite("applied", int(reply[1]), offset=offset or None)
        outcome = "fenced" if reply[0] == -1 else "conflict"
        return StateWrite(outcome, int(reply[1]), json.loads(reply[2]))
