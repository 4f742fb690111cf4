"""Rooms in one process (the in-process store): a room is a scope, presence, owner, state."""

from __future__ import annotations

import copy
import logging
import pickle
from typing import Any

import pytest
import trio
import trio.testing
from helpers import closed_with, serving
from trio_websocket import open_websocket_url

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast
from trioweb.rooms import LeaseLost, Room, RoomFailed, Rooms, RoomUnavailable
from trioweb.testing import TestClient


def living_tasks() -> int:
    """How many tasks the trio run has right now."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


def room_app(rooms: Rooms) -> App:
    """Join ``/ws/{name}?user=U``: a welcome with the members, then the room's messages; text
    from the client is published to the room."""
    app = App()
    app.use(rooms.hub)
    app.use(rooms)

    @app.websocket("/ws/{name}")
    async def member(ws: WebSocket, nursery: trio.Nursery, name: str) -> None:
        async with ws, rooms.join(name, user=ws.query_params["user"]) as joined:
            await ws.send_json({"type": "welcome", "members": joined.room.presence.users()})
            nursery.start_soon(joined.forward_to, ws)
            async for text in ws.iter_text():
                await joined.room.publish(text)

    return app


@pytest.fixture
def rooms() -> Rooms:
    return Rooms(Broadcast())


async def test_a_member_is_present_everywhere_from_its_join_to_its_leave(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("lobby", user="ann", meta={"role": "host"}) as ann:
            room = ann.room
            assert rooms.get("lobby") is room
            assert room.presence.users() == ["ann"]
            (entry,) = room.presence.entries()
            assert (entry.user, entry.meta, entry.id) == ("ann", {"role": "host"}, ann.id)
            async with rooms.join("lobby", user="bob") as bob:
                assert bob.room is room
                assert room.presence.users() == ["ann", "bob"]
                assert [m.user for m in room.members] == ["ann", "bob"]
            assert room.presence.users() == ["ann"]
        assert rooms.get("lobby") is None
        assert len(rooms) == 0


async def test_two_tabs_of_one_user_are_two_presences_and_one_user(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as tab1, rooms.join("r", user="ann") as tab2:
            presence = tab1.room.presence
            assert len(presence) == 2
            assert presence.users() == ["ann"]
            assert [e.id for e in presence.by_user()["ann"]] == [tab1.id, tab2.id]


async def test_room_messages_reach_every_member_and_nothing_after_the_leave(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            async with rooms.join("r", user="bob") as bob:
                await ann.room.publish({"n": 1})
                assert await ann.messages.receive() == '{"n":1}'
                assert await bob.messages.receive() == '{"n":1}'
                ann.room.send_local("local")  # this process's members only, at once
                assert await bob.messages.receive() == "local"
            with pytest.raises(trio.EndOfChannel):
                await bob.messages.receive()
            assert await ann.messages.receive() == "local"


async def test_presence_changes_are_merged_while_the_reader_is_busy(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            changes = ann.room.presence.changes()
            async with rooms.join("r", user="bob") as bob:
                pass
            async with rooms.join("r", user="cid") as cid:
                await trio.testing.wait_all_tasks_blocked()
                change = await changes.__anext__()
                # bob came and went before anyone looked: he is in neither list.
                assert [e.user for e in change.joined] == ["cid"]
                assert change.left == ()
                assert bob.id not in ann.room.presence
            change = await changes.__anext__()
            assert [e.id for e in change.left] == [cid.id]


async def test_room_tasks_run_while_the_room_has_members_and_are_cancelled_after(
    rooms, autojump_clock
):
    started, cancelled = [], []

    @rooms.task
    async def heartbeat(room: Room) -> None:
        started.append(room.name)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(room.name)
            raise

    async with rooms.hub.lifespan(), rooms.lifespan():
        await trio.testing.wait_all_tasks_blocked()
        baseline = living_tasks()
        async with rooms.join("a", user="ann"), rooms.join("a", user="bob"):
            async with rooms.join("b", user="cid") as cid:
                cid.room.nursery.start_soon(trio.sleep_forever)
                await trio.testing.wait_all_tasks_blocked()
                assert started == ["a", "b"]
            await trio.testing.wait_all_tasks_blocked()
            assert cancelled == ["b"]
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(cancelled) == ["a", "b"]
        assert living_tasks() == baseline
        assert len(rooms) == 0


async def test_a_join_cancelled_halfway_leaves_nothing_behind(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        await trio.testing.wait_all_tasks_blocked()
        baseline = living_tasks()
        with trio.CancelScope() as scope:
            scope.cancel()
            async with rooms.join("r", user="ann"):
                pytest.fail("the join completed under a cancelled scope")
        await trio.testing.wait_all_tasks_blocked()
        assert len(rooms) == 0
        assert living_tasks() == baseline
        # and the room opens normally afterwards, without a ghost in its presence
        async with rooms.join("r", user="bob") as bob:
            assert bob.room.presence.users() == ["bob"]


async def test_a_member_whose_block_raises_is_removed(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            with pytest.raises(KeyError):
                async with rooms.join("r", user="bob"):
                    raise KeyError("boom")
            assert ann.room.presence.users() == ["ann"]
            assert len(ann.room.members) == 1


async def test_the_grace_period_keeps_an_empty_room_open(autojump_clock):
    rooms = Rooms(Broadcast(), grace=10.0)
    runs = []

    @rooms.task
    async def tick(room: Room) -> None:
        runs.append(trio.current_time())
        await trio.sleep_forever()

    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            first = ann.room
        await trio.sleep(9)
        assert rooms.get("r") is first  # still open: a rejoin finds it as it was
        async with rooms.join("r", user="bob") as bob:
            assert bob.room is first
        await trio.sleep(9.9)
        assert rooms.get("r") is first
        await trio.sleep(0.2)
        assert rooms.get("r") is None
        assert len(runs) == 1


async def test_a_failing_room_task_closes_its_members_with_1011_and_the_room_reopens(rooms, caplog):
    attempts = []

    @rooms.task
    async def fragile(room: Room) -> None:
        attempts.append(room.name)
        if len(attempts) == 1:
            async for change in room.presence.changes():
                if any(entry.user == "bob" for entry in change.joined):
                    raise ZeroDivisionError("the room's bug")
        await trio.sleep_forever()

    async with TestClient(room_app(rooms)) as client:
        async with client.websocket("/ws/r?user=ann") as ann:
            assert (await ann.receive_json())["type"] == "welcome"
            async with client.websocket("/ws/r?user=bob") as bob:
                closed = await closed_with(bob)
                assert (closed.code, closed.reason) == (1011, "room failed")
            closed = await closed_with(ann)
            assert closed.code == 1011
        assert "room 'r' failed" in caplog.text
        assert "ZeroDivisionError: the room's bug" in caplog.text
        async with client.websocket("/ws/r?user=cid") as cid:
            assert (await cid.receive_json())["members"] == ["cid"]
        assert attempts == ["r", "r"]


async def test_the_owner_task_runs_once_and_keeps_its_lease(rooms, autojump_clock):
    owned = []

    @rooms.owner_task
    async def countdown(room: Room) -> None:
        assert room.lease is not None
        owned.append(room.lease.fence)
        await trio.sleep_forever()

    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann, rooms.join("r", user="bob"):
            await trio.sleep(60)  # twelve lease times: renewed all along
            assert owned == [1]
            assert ann.room.lease is not None
        await trio.testing.wait_all_tasks_blocked()
        async with rooms.join("r", user="cid") as cid:
            await trio.testing.wait_all_tasks_blocked()
            # The room closed and released its lease: the new room owns it at once.
            assert owned == [1, 2]
            assert cid.room.lease is not None and cid.room.lease.fence == 2


async def test_state_updates_are_atomic_and_announced_in_their_order(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            room = ann.room
            assert await room.state.get() == {}

            async def add_one() -> None:
                await room.state.update(
                    lambda s: {**s, "n": s.get("n", 0) + 1},
                    announce=lambda s: {"n": s["n"]},
                )

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(add_one)
            assert await room.state.get() == {"n": 50}
            assert [await ann.messages.receive() for _ in range(50)] == [
                f'{{"n":{n}}}' for n in range(1, 51)
            ]


async def test_an_update_that_declines_writes_and_announces_nothing(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            state = ann.room.state
            bid = await state.update(lambda s: {"high": 10}, announce=lambda s: s)
            assert (bid.applied, bid.state, bid.version) == (True, {"high": 10}, 1)

            def higher(amount: int) -> Any:
                return lambda s: {"high": amount} if amount > s["high"] else None

            low = await state.update(higher(5), announce=lambda s: s)
            assert (low.applied, low.state, low.version) == (False, {"high": 10}, 1)
            assert await ann.messages.receive() == '{"high":10}'
            assert len(ann.messages._buffer) == 0


async def test_a_fenced_write_outside_the_owner_raises_lease_lost(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            with pytest.raises(LeaseLost):
                await ann.room.state.update(lambda s: {"x": 1}, fenced=True)
            assert await ann.room.state.get() == {}


async def test_names_are_checked_and_rooms_must_be_running(rooms):
    with pytest.raises(RuntimeError, match=r"app\.use"):
        async with rooms.join("r", user="ann"):
            pass
    async with rooms.hub.lifespan(), rooms.lifespan():
        for room, user in (("", "ann"), ("r", ""), ("x" * 201, "ann")):
            with pytest.raises(ValueError):
                async with rooms.join(room, user=user):
                    pass
        with pytest.raises(RuntimeError, match="while the rooms are running"):
            rooms.task(trio.sleep_forever)


async def test_over_a_real_server_a_disconnect_removes_the_member(rooms, caplog):
    caplog.set_level(logging.WARNING)
    left = trio.Event()

    @rooms.task
    async def watch(room: Room) -> None:
        async for change in room.presence.changes():
            room.send_local({"type": "presence", "members": room.presence.users()})
            if change.left:
                left.set()

    async with serving(room_app(rooms)) as server:
        async with open_websocket_url(server.url("/ws/r?user=ann")) as ann:
            assert await ann.get_message() == '{"type":"welcome","members":["ann"]}'
            async with open_websocket_url(server.url("/ws/r?user=bob")) as bob:
                await bob.get_message()  # welcome
                await bob.send_message("hello")
                seen = [await ann.get_message()]
                while seen[-1] != "hello" and len(seen) < 5:  # published as sent, text as text
                    seen.append(await ann.get_message())
                assert seen[-2:] == ['{"type":"presence","members":["ann","bob"]}', "hello"]
            with trio.fail_after(5):
                await left.wait()
            assert await ann.get_message() == '{"type":"presence","members":["ann"]}'
            room = rooms.get("r")
            assert room is not None and room.presence.users() == ["ann"]
    assert rooms.get("r") is None
    assert "Traceback" not in caplog.text


async def test_state_outlives_the_room_for_state_ttl_then_is_forgotten(autojump_clock):
    rooms = Rooms(Broadcast(), state_ttl=100.0)
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            await ann.room.state.update(lambda s: {"high": 10})
        await trio.sleep(50)
        async with rooms.join("r", user="bob") as bob:
            assert await bob.room.state.get() == {"high": 10}  # a new room, the same state
        await trio.sleep(150)
        async with rooms.join("other", user="cid"):
            pass  # any use of the store forgets what is past its time
        async with rooms.join("r", user="bob") as bob:
            assert await bob.room.state.get() == {}


def test_room_errors_copy_and_pickle_with_their_details():
    for error in (RoomFailed("r", "ZeroDivisionError"), RoomUnavailable("r", "OSError")):
        for again in (copy.copy(error), pickle.loads(pickle.dumps(error))):
            assert type(again) is type(error)
            assert (again.room, again.detail, again.code, str(again)) == (
                error.room,
                error.detail,
                error.code,
                str(error),
            )


async def test_a_name_from_the_client_that_is_refused_closes_with_1008(rooms, caplog):
    async with TestClient(room_app(rooms)) as client:
        async with client.websocket("/ws/" + "x" * 201 + "?user=ann") as ws:
            closed = await closed_with(ws)
            assert closed.code == 1008
            assert closed.reason == "a room name is at most 200 characters (201 given)"
    assert "Traceback" not in caplog.text


async def test_a_room_task_sees_the_first_join(rooms):
    seen: list[str] = []

    @rooms.task
    async def watch(room: Room) -> None:
        async for change in room.presence.changes():
            seen.extend(entry.user for entry in change.joined)

    async with rooms.hub.lifespan(), rooms.lifespan(), rooms.join("r", user="ann"):
        await trio.testing.wait_all_tasks_blocked()
        assert seen == ["ann"]


async def test_meta_must_be_json_in_process_as_on_redis(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        with pytest.raises(TypeError):
            async with rooms.join("r", user="ann", meta={"when": object()}):
                pass
        assert len(rooms) == 0
