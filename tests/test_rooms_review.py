"""Review of trioweb.rooms: each test pins one problem found (races, leaks, hangs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trioweb.broadcast import Broadcast
from trioweb.rooms import LeaseLost, Room, RoomFailed, Rooms, RoomUnavailable
from trioweb.rooms._store import RoomStore


@pytest.fixture
def rooms() -> Rooms:
    return Rooms(Broadcast())


def store_of(rooms: Rooms) -> Any:
    """The running store of ``rooms`` (to slow one of its calls down in a test)."""
    assert rooms._settings is not None
    store: RoomStore = rooms._settings.store
    return store


# -- a room that fails ------------------------------------------------------------------------


async def test_a_room_task_raising_room_unavailable_closes_the_members(rooms, autojump_clock):
    # A plain room task meets a store outage (room.state.get() raises RoomUnavailable): the
    # room ends, and its members must be told, not left in a room that no longer exists.
    outage = trio.Event()

    @rooms.task
    async def reads_state(room: Room) -> None:
        await outage.wait()
        raise RoomUnavailable(room.name, "simulated outage")

    async with rooms.hub.lifespan(), rooms.lifespan():
        with trio.fail_after(60), pytest.raises(RoomUnavailable):
            async with rooms.join("r", user="ann") as ann:
                outage.set()
                await ann.messages.receive()  # before the fix: waits forever


async def test_a_join_completing_after_its_room_failed_is_failed_too(rooms, autojump_clock):
    # The room fails while a join is inside store.join(): the failure reached the member
    # before its block began, and must still end the block.
    boom = trio.Event()

    @rooms.task
    async def fragile(room: Room) -> None:
        await boom.wait()
        raise ZeroDivisionError("the room's bug")

    async with rooms.hub.lifespan(), rooms.lifespan():
        store = store_of(rooms)
        real_join = store.join
        in_join, go_on = trio.Event(), trio.Event()

        async def slow_join(room: str, entry: Any) -> None:
            in_join.set()
            await go_on.wait()
            await real_join(room, entry)

        store.join = slow_join

        async def fail_the_room_meanwhile() -> None:
            await in_join.wait()
            boom.set()
            await trio.testing.wait_all_tasks_blocked()
            go_on.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_the_room_meanwhile)
            with trio.fail_after(60), pytest.raises(RoomFailed):
                async with rooms.join("r", user="ann") as ann:
                    await ann.messages.receive()  # before the fix: a dead room, forever


async def test_a_failing_room_is_out_of_the_registry_at_once(rooms):
    # The module's promise: "A room that is closing or failed is out of the registry at once:
    # the next join opens a new one". A task of the room failed; another task's cleanup
    # (shielded) still runs: a join meanwhile must not land in the dying room.
    boom, cleanup_may_end = trio.Event(), trio.Event()
    failed: list[Room] = []

    @rooms.task
    async def fragile(room: Room) -> None:
        await boom.wait()
        if not failed:  # the first room only
            failed.append(room)
            raise ZeroDivisionError("the room's bug")

    @rooms.task
    async def slow_to_stop(room: Room) -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await cleanup_may_end.wait()

    async with rooms.hub.lifespan(), rooms.lifespan():
        try:
            async with trio.open_nursery() as nursery:

                async def ann() -> None:
                    with pytest.raises(RoomFailed):
                        async with rooms.join("r", user="ann"):
                            await trio.sleep_forever()

                nursery.start_soon(ann)
                await trio.testing.wait_all_tasks_blocked()
                first = rooms.get("r")
                assert first is not None
                boom.set()
                await trio.testing.wait_all_tasks_blocked()
                assert rooms.get("r") is None  # before the fix: the failing room
                with trio.fail_after(5):
                    async with rooms.join("r", user="bob") as bob:
                        assert bob.room is not first
                        cleanup_may_end.set()
                        await trio.testing.wait_all_tasks_blocked()
                        assert bob.failure is None
        finally:
            cleanup_may_end.set()


async def test_lease_lost_inside_an_owner_tasks_nursery_gives_up_ownership_not_the_room(
    rooms, autojump_clock
):
    # LeaseLost is "nothing to do but let it propagate": from a nursery inside the owner task
    # it propagates as an ExceptionGroup, which must not fail the room (1011 to everyone).
    owned: list[int] = []
    again = trio.Event()

    async def write_as_a_stale_owner() -> None:
        await trio.lowlevel.checkpoint()
        raise LeaseLost("this process no longer owns room 'r'")

    @rooms.owner_task
    async def own(room: Room) -> None:
        assert room.lease is not None
        owned.append(room.lease.fence)
        if len(owned) == 1:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_as_a_stale_owner)
                await trio.sleep_forever()
        again.set()
        await trio.sleep_forever()

    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            with trio.fail_after(3 * rooms.lease_ttl):
                await again.wait()
            assert ann.failure is None
            assert owned == [1, 2]


# -- a join that fails before it begins ---------------------------------------------------------


async def test_a_join_refused_for_its_meta_does_not_keep_the_room_open(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        with pytest.raises(TypeError):
            async with rooms.join("r", user="ann", meta=42):  # type: ignore[arg-type]
                pytest.fail("joined with a meta that is not a mapping")
        await trio.testing.wait_all_tasks_blocked()
        assert rooms.get("r") is None  # before the fix: open (and its tasks running) for good
        assert len(rooms._rooms) == 0


# -- stopping ----------------------------------------------------------------------------------


async def test_a_join_waiting_for_its_room_when_the_rooms_stop_does_not_hang(rooms):
    ended: list[BaseException] = []
    done = trio.Event()
    async with rooms.hub.lifespan():
        async with trio.open_nursery() as outside:
            async with rooms.lifespan():
                store = store_of(rooms)
                never = trio.Event()

                async def stuck_presence(room: str) -> Any:
                    await never.wait()  # the room never finishes opening

                store.presence = stuck_presence

                async def join() -> None:
                    try:
                        async with rooms.join("r", user="ann"):
                            pass
                    except Exception as exc:
                        ended.append(exc)
                    finally:
                        done.set()

                outside.start_soon(join)
                await trio.testing.wait_all_tasks_blocked()
            # The rooms stopped under the join: it must end, not wait for a room that is gone.
            with trio.fail_after(5):
                await done.wait()
    assert [type(exc) for exc in ended] == [RoomUnavailable]


async def test_members_inside_when_the_rooms_stop_are_closed(rooms):
    done = trio.Event()
    ended: list[BaseException] = []
    async with rooms.hub.lifespan():
        async with trio.open_nursery() as outside:
            async with rooms.lifespan():
                joined = trio.Event()

                async def member() -> None:
                    try:
                        async with rooms.join("r", user="ann") as ann:
                            joined.set()
                            await ann.messages.receive()
                    except Exception as exc:
                        ended.append(exc)
                    finally:
                        done.set()

                outside.start_soon(member)
                with trio.fail_after(5):
                    await joined.wait()
            with trio.fail_after(5):
                await done.wait()  # before the fix: the member waits forever in a room gone
    assert [type(exc) for exc in ended] == [RoomUnavailable]


# -- leaks --------------------------------------------------------------------------------------


async def test_a_join_cancelled_before_the_store_had_it_leaves_no_departed_id(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            store = store_of(rooms)
            busy, free = trio.Event(), trio.Event()

            async def hold_the_store() -> None:
                async with store._lock:
                    busy.set()
                    await free.wait()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold_the_store)
                await busy.wait()
                joining = trio.CancelScope()

                async def bob() -> None:
                    with joining:
                        async with rooms.join("r", user="bob"):
                            pytest.fail("bob's join went through")

                nursery.start_soon(bob)
                await trio.testing.wait_all_tasks_blocked()
                joining.cancel()  # bob gives up while the store has not got his entry yet
                await trio.testing.wait_all_tasks_blocked()
                free.set()
            await trio.testing.wait_all_tasks_blocked()
            assert ann.room.presence.users() == ["ann"]
            assert ann.room.presence._departed == set()  # before the fix: bob's id, for good


# -- on a real Redis ----------------------------------------------------------------------------


@asynccontextmanager
async def two_processes(url: str, **options: float) -> AsyncIterator[tuple[Rooms, Rooms]]:
    pair = (Rooms(Broadcast(url), **options), Rooms(Broadcast(url), **options))
    async with AsyncExitStack() as stack:
        for rooms in pair:
            await stack.enter_async_context(rooms.hub.lifespan())
            await stack.enter_async_context(rooms.lifespan())
        yield pair


async def test_a_store_that_stopped_is_room_unavailable_not_broker_unavailable(redis_server):
    # After the Rooms stop (app shutdown) a connection may still hold its member: its state
    # reads and its leave meet a store that is not connected any more. That is "unreachable"
    # (RoomUnavailable, 1013; a leave that expires), not a BrokerUnavailable escaping.
    rooms = Rooms(Broadcast(redis_server.url))
    async with rooms.hub.lifespan():
        async with rooms.lifespan():
            store = store_of(rooms)
            room = Room("r", rooms._settings)  # type: ignore[arg-type]
        with pytest.raises(RoomUnavailable):
            await room.state.get()
        with pytest.raises(store.errors):
            await store.leave("r", "some-id")


async def test_a_heartbeat_on_its_way_does_not_bring_a_left_member_back(redis_server):
    # The heartbeat reads the members, then its script runs: a member that left in between
    # is put back ("adding back any that expired") and announced as joined again, a ghost in
    # every view until a sweep, most of a presence TTL later.
    async with two_processes(redis_server.url, presence_ttl=4.0) as (here, there):
        store = store_of(here)
        real_heartbeat = store.heartbeat
        caught, go_on, through = trio.Event(), trio.Event(), trio.Event()

        async def held_heartbeat(rooms: list[tuple[str, list[Any]]]) -> None:
            if any(entries for _, entries in rooms) and not caught.is_set():
                caught.set()  # the heartbeat has read the members: ann is one of them
                await go_on.wait()
                await real_heartbeat(rooms)
                through.set()
                return
            await real_heartbeat(rooms)

        store.heartbeat = held_heartbeat
        async with there.join("r", user="bob") as bob:
            async with there.hub.subscribe(bob.room.topics.presence) as announcements:
                async with here.join("r", user="ann") as ann:
                    with trio.fail_after(3):
                        await caught.wait()
                # ann has left, and her leave is recorded; now the heartbeat goes through.
                go_on.set()
                with trio.fail_after(3):
                    await through.wait()
                # Her entry would live 3 s; gone again at once, announced: the room is bob's.
                with trio.fail_after(1.5):
                    while ann.id in {entry.id for entry in await store.presence("r")}:
                        await announcements.receive()


async def test_the_state_of_a_room_in_use_outlives_state_ttl_without_owner_tasks(redis_server):
    # "state_ttl: how long a room's state outlives its last use": a room with members is in
    # use (the in-process store keeps it so), even if it has no owner tasks to renew a lease.
    rooms = Rooms(Broadcast(redis_server.url), presence_ttl=0.4, state_ttl=1.0)
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            await ann.room.state.update(lambda s: {"topic": "rust"})
            await trio.sleep(1.5)  # the state's time to live, and more, in use all along
            assert await ann.room.state.get() == {"topic": "rust"}


async def test_a_room_name_utf8_cannot_encode_is_refused_and_the_hub_lives_on(redis_server):
    # JSON from a client may carry a lone surrogate ("\udc80" is valid JSON): taken as a room
    # name, it reached the broker's SUBSCRIBE, whose encoding error stopped the whole hub.
    rooms = Rooms(Broadcast(redis_server.url))
    async with rooms.hub.lifespan(), rooms.lifespan():
        for room, user in (("\udc80", "ann"), ("r", "\udc80")):
            with trio.fail_after(5), pytest.raises(ValueError):
                async with rooms.join(room, user=user):
                    pass
        with trio.fail_after(5):
            async with rooms.join("r", user="bob") as bob:
                assert await bob.room.publish("still here")
                assert await bob.messages.receive() == "still here"


async def test_meta_and_state_with_a_lone_surrogate_are_stored_in_redis(redis_server):
    async with two_processes(redis_server.url) as (here, there):
        with trio.fail_after(5):
            async with here.join("r", user="ann", meta={"nick": "\udc80"}) as ann:
                await ann.room.state.update(lambda s: {"title": "\udc80"})
                async with there.join("r", user="bob") as bob:
                    (entry,) = [e for e in bob.room.presence if e.user == "ann"]
                    assert entry.meta == {"nick": "\udc80"}
                    assert await bob.room.state.get() == {"title": "\udc80"}
