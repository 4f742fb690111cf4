"""The Redis room store against a real redis-server: two Rooms in one trio run stand for two
processes (each its own hub and store connection). Two real server processes and kill -9 are
in test_rooms_processes.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import coredis
import pytest
import trio
import trio.testing

from trioweb.broadcast import Broadcast, BrokerUnavailable
from trioweb.rooms import LeaseLost, PresenceEntry, Room, Rooms, RoomUnavailable
from trioweb.rooms.redis import RedisStore


@asynccontextmanager
async def two_processes(url: str, **options: Any) -> AsyncIterator[tuple[Rooms, Rooms]]:
    pair = (Rooms(Broadcast(url), **options), Rooms(Broadcast(url), **options))
    async with AsyncExitStack() as stack:
        for rooms in pair:
            await stack.enter_async_context(rooms.hub.lifespan())
            await stack.enter_async_context(rooms.lifespan())
        yield pair


async def until_present(room: Room, users: list[str], limit: float = 3.0) -> float:
    """Wait (bounded) until ``room``'s presence is ``users``; return how long it took."""
    start = trio.current_time()
    changes = room.presence.changes()
    with trio.fail_after(limit):
        while room.presence.users() != users:
            await changes.__anext__()
    return trio.current_time() - start


async def test_presence_is_shared_and_follows_joins_and_leaves(redis_server):
    async with two_processes(redis_server.url) as (here, there):
        async with here.join("r", user="ann", meta={"role": "host"}) as ann:
            async with there.join("r", user="bob") as bob:
                assert bob.room.presence.users() == ["ann", "bob"]  # the snapshot at open
                (host,) = [e for e in bob.room.presence if e.user == "ann"]
                assert host.meta == {"role": "host"} and host.id == ann.id
                await until_present(ann.room, ["ann", "bob"])
            await until_present(ann.room, ["ann"])
        assert here.get("r") is None and there.get("r") is None
        client = coredis.Redis.from_url(redis_server.url)
        async with client:
            assert await client.zcard("trioweb:presence:r") == 0
            assert await client.hlen("trioweb:members:r") == 0


async def test_a_dead_processes_members_are_swept_within_the_ttl(redis_server):
    async with two_processes(redis_server.url, presence_ttl=1.0) as (here, there):
        async with here.join("r", user="ann") as ann:
            client = coredis.Redis.from_url(redis_server.url)
            async with client:
                # A process that died with a member: its entry, never refreshed again.
                now = await ann.room.time()  # Redis's clock
                expires = int(now * 1000) + 600
                await client.zadd("trioweb:presence:r", {"ghost-1": expires})
                await client.hset(
                    "trioweb:members:r", {"ghost-1": '{"id":"ghost-1","user":"zed","meta":{}}'}
                )
            async with there.join("r", user="bob") as bob:
                # The room opens on the other process with the snapshot: the ghost is in it...
                assert bob.room.presence.users() == ["ann", "bob", "zed"]
                # ... until a sweep (with each heartbeat, a quarter TTL) finds it expired: it
                # expires 0.6 s after it was written, then a sweep within 0.25 s.
                took = await until_present(bob.room, ["ann", "bob"])
                assert took < 1.5, took
                assert bob.room.presence.users() == ["ann", "bob"]
                assert ann.room.presence.users() == ["ann", "bob"]


async def test_live_members_outlive_many_ttls(redis_server, caplog):
    async with two_processes(redis_server.url, presence_ttl=0.4) as (here, there):
        async with here.join("r", user="ann") as ann, there.join("r", user="bob") as bob:
            await until_present(ann.room, ["ann", "bob"])
            changes = ann.room.presence.changes()
            await trio.sleep(2.0)  # five TTLs of heartbeats
            assert ann.room.presence.users() == bob.room.presence.users() == ["ann", "bob"]
            assert changes._joined == {} and changes._left == {}


async def test_one_owner_at_a_time_and_a_release_hands_over_at_once(redis_server):
    owners: list[tuple[str, int]] = []
    new_owner = trio.Event()

    def owner(label: str, rooms: Rooms) -> None:
        @rooms.owner_task
        async def own(room: Room) -> None:
            nonlocal new_owner
            assert room.lease is not None
            owners.append((label, room.lease.fence))
            new_owner.set()
            new_owner = trio.Event()
            await trio.sleep_forever()

    async with AsyncExitStack() as stack:
        pair = []
        for label in ("A", "B"):
            rooms = Rooms(Broadcast(redis_server.url), lease_ttl=1.0)
            owner(label, rooms)
            await stack.enter_async_context(rooms.hub.lifespan())
            await stack.enter_async_context(rooms.lifespan())
            pair.append(rooms)
        a, b = pair
        leave_a = trio.Event()
        async with trio.open_nursery() as nursery:

            async def member_of_a() -> None:
                async with a.join("lot", user="ann"):
                    await leave_a.wait()

            nursery.start_soon(member_of_a)
            with trio.fail_after(3):
                await new_owner.wait()
            assert owners == [("A", 1)]
            async with b.join("lot", user="bob") as bob:
                await trio.sleep(2.5)  # 2.5 lease times: A renews, B waits
                assert owners == [("A", 1)]
                assert bob.room.lease is None
                handed_over = new_owner
                start = trio.current_time()
                leave_a.set()
                with trio.fail_after(3):
                    await handed_over.wait()
                took = trio.current_time() - start
                assert owners == [("A", 1), ("B", 2)]
                assert took < 0.5, took  # the release is announced: no wait for the expiry


async def test_a_lost_lease_cancels_the_owner_tasks_and_fences_their_writes(redis_server):
    ran, cancelled = trio.Event(), trio.Event()
    lost_write: list[BaseException] = []

    rooms = Rooms(Broadcast(redis_server.url), lease_ttl=1.0)

    @rooms.owner_task
    async def own(room: Room) -> None:
        await room.state.update(lambda s: {"by": "owner"}, fenced=True)
        ran.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with rooms.hub.lifespan(), rooms.lifespan(), rooms.join("lot", user="ann") as ann:
        with trio.fail_after(3):
            await ran.wait()
        lease = ann.room.lease
        assert lease is not None
        client = coredis.Redis.from_url(redis_server.url)
        async with client:
            # Another process took the lease (as after an expiry while this one was paused).
            await client.set("trioweb:owner:lot", "999:elsewhere", px=10_000)
        try:
            await ann.room.state.update(lambda s: {"by": "stale owner"}, fenced=True)
        except LeaseLost as exc:
            lost_write.append(exc)
        assert lost_write, "a write under a lease that is no longer the room's went through"
        with trio.fail_after(2):  # at the next renewal (a third of the TTL)
            await cancelled.wait()
        assert ann.room.lease is None
        assert await ann.room.state.get() == {"by": "owner"}


async def test_concurrent_updates_from_two_processes_are_atomic_and_ordered(redis_server):
    async with two_processes(redis_server.url) as (here, there):
        async with here.join("r", user="ann") as ann, there.join("r", user="bob") as bob:

            async def bid(member, amount: int) -> None:
                await member.room.state.update(
                    lambda s: {"high": amount} if amount > s.get("high", 0) else None,
                    announce=lambda s: {"high": s["high"]},
                )

            async with trio.open_nursery() as nursery:
                for n in range(1, 60):
                    nursery.start_soon(bid, ann if n % 2 else bob, n)
            assert await ann.room.state.get() == {"high": 59}
            seen = {}
            for member in (ann, bob):
                got = []
                with trio.fail_after(3):
                    while not got or got[-1] != 59:
                        got.append(int((await member.messages.receive())[8:-1]))
                seen[member.user] = got
            assert seen["ann"] == seen["bob"]
            assert seen["ann"] == sorted(set(seen["ann"]))  # strictly increasing


async def test_an_unreachable_store_fails_startup_in_one_line():
    rooms = Rooms(Broadcast("redis://127.0.0.1:1/0"))
    with pytest.raises(BrokerUnavailable, match="cannot reach"):
        async with rooms.hub.lifespan():
            pass


async def test_a_store_outage_gives_room_unavailable_and_recovers(redis_server):
    async with two_processes(redis_server.url, presence_ttl=1.0) as (here, _):
        async with here.join("r", user="ann") as ann:
            redis_server.stop()
            with pytest.raises(RoomUnavailable) as failed:
                await ann.room.state.update(lambda s: {"x": 1})
            assert failed.value.code == 1013
            with pytest.raises(RoomUnavailable):
                async with here.join("r", user="bob"):
                    pass
            assert ann.room.presence.users() == ["ann"]
            redis_server.start()
            # The store's client reconnects by itself on the next command.
            with trio.fail_after(5):
                await ann.room.state.update(lambda s: {"x": 1})
            async with here.join("r", user="bob") as bob:
                assert bob.room.presence.users() == ["ann", "bob"]


async def test_a_heartbeat_delayed_behind_a_leave_does_not_bring_the_member_back(redis_server):
    store = RedisStore(redis_server.url, "trioweb", presence_ttl=5.0, state_ttl=60.0)
    entry = PresenceEntry("e1", "ann", {})
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.join("r", entry)
        # The heartbeat's entries were read before the leave; it reaches Redis after it.
        await store.leave("r", entry.id)
        await store.heartbeat([("r", [entry])])
        assert await store.presence("r") == []
        nursery.cancel_scope.cancel()


async def test_one_rooms_failing_heartbeat_does_not_starve_the_others(redis_server, caplog):
    async with two_processes(redis_server.url, presence_ttl=0.4) as (here, there):
        async with here.join("bad", user="ann"), here.join("good", user="ann") as good:
            client = coredis.Redis.from_url(redis_server.url)
            async with client:
                # Room "bad"'s presence key is broken: each heartbeat of it fails (WRONGTYPE).
                await client.delete(["trioweb:presence:bad"])
                await client.set("trioweb:presence:bad", "not a sorted set")
            async with there.join("good", user="bob") as bob:
                changes = bob.room.presence.changes()
                await trio.sleep(2.0)  # five TTLs: ann must stay present in "good" throughout
                assert bob.room.presence.users() == ["ann", "bob"]
                assert changes._left == {}
            await until_present(good.room, ["ann"])
    assert "presence heartbeat failed for 1 room(s)" in caplog.text


async def test_history_on_redis_recovers_exactly_across_processes(redis_server):
    async with two_processes(redis_server.url, history=5) as (here, there):
        async with here.join("r", user="ann") as ann:
            offsets = [await ann.room.history.append({"n": n}) for n in range(8)]
            assert [int(o) for o in offsets] == list(range(int(offsets[0]), int(offsets[0]) + 8))
            async with there.join("r", user="bob", since=offsets[2]) as bob:
                assert bob.recovery is not None and bob.recovery.exact
                replayed = [json.loads(m)["n"] for m in bob.recovery.messages]
                assert replayed == [3, 4, 5, 6, 7]
            async with there.join("r", user="bob", since=offsets[1]) as bob:
                assert bob.recovery is not None and not bob.recovery.exact  # trimmed
            update = await ann.room.state.update(
                lambda s: {"high": 1}, announce=lambda s: {"type": "bid"}, history=True
            )
            assert update.offset == str(int(offsets[-1]) + 1)
            assert json.loads(await ann.messages.receive())["n"] == 0


async def test_a_history_lost_with_redis_never_recovers_an_old_offset(redis_server):
    async with two_processes(redis_server.url) as (here, _):
        async with here.join("r", user="ann") as ann:
            old = await ann.room.history.append({"n": 1})
            client = coredis.Redis.from_url(redis_server.url)
            async with client:
                await client.flushall()
            assert not (await ann.room.history.recover(old)).exact
            new = await ann.room.history.append({"n": 2})
            assert int(new) > int(old)


async def test_stored_messages_lost_by_pubsub_come_back_from_the_history(redis_server):
    async with two_processes(redis_server.url) as (here, there):
        async with here.join("r", user="ann") as ann, there.join("r", user="bob") as bob:
            first = await bob.room.history.append({"n": 0})
            assert json.loads(await ann.messages.receive())["offset"] == first
            client = coredis.Redis.from_url(redis_server.url)
            async with client:
                # Cut every pub/sub connection: ann's process reconnects (coredis does it by
                # itself) and loses whatever is published meanwhile: a gap.
                await client.client_kill(type_=coredis.PureToken.PUBSUB)
            sent = [first] + [await bob.room.history.append({"n": n}) for n in range(1, 30)]
            got = [first]
            with trio.fail_after(5):
                while len(got) < len(sent):
                    item = await ann.messages.receive()
                    assert isinstance(item, str), f"a gap reached the member: {item}"
                    got.append(json.loads(item)["offset"])
            assert got == sent


async def test_the_history_of_a_room_in_use_outlives_state_ttl(redis_server):
    async with two_processes(redis_server.url, presence_ttl=0.4, state_ttl=1.0) as (here, _):
        async with here.join("r", user="ann") as ann:
            kept = await ann.room.history.append({"n": 1})
            await trio.sleep(2.0)  # twice state_ttl, with the room in use all along
            recovery = await ann.room.history.recover(str(int(kept) - 1))
            assert recovery.exact and len(recovery.messages) == 1


async def test_a_stored_message_whose_publish_was_lost_is_filled_in_from_the_history(
    redis_server,
):
    async with two_processes(redis_server.url) as (here, there):
        async with here.join("r", user="ann") as ann, there.join("r", user="bob") as bob:
            first = await bob.room.history.append({"n": 1})
            client = coredis.Redis.from_url(redis_server.url)
            async with client:
                # Stored, but its PUBLISH never reached anyone (as when the hub's pub/sub
                # connection is replaced right then): no Gap says so, only the offsets.
                second = await client.incr("trioweb:offsets:r")
                message = f'{{"offset":"{second}","n":2}}'
                await client.xadd("trioweb:history:r", {"m": message}, identifier=f"{second}-0")
            third = await bob.room.history.append({"n": 3})
            got = []
            with trio.fail_after(5):
                while len(got) < 3:
                    item = await ann.messages.receive()
                    assert isinstance(item, str), f"a gap reached the member: {item}"
                    got.append(json.loads(item))
            assert [m["offset"] for m in got] == [first, str(second), third]
            assert [m["n"] for m in got] == [1, 2, 3]
