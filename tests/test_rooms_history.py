"""Room history and resume: offsets, exact recovery, no loss and no duplicate at the seam."""

from __future__ import annotations

import json

import pytest
import trio
import trio.lowlevel
import trio.testing

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast
from trioweb.rooms import Rooms
from trioweb.testing import TestClient


def history_app(rooms: Rooms) -> App:
    """``/ws/{name}?user=U[&since=O]``: a welcome saying whether the resume was exact, then
    the room's messages; every text from the client is kept in the room's history."""
    app = App()
    app.use(rooms.hub)
    app.use(rooms)

    @app.websocket("/ws/{name}")
    async def member(ws: WebSocket, nursery: trio.Nursery, name: str) -> None:
        since = ws.query_params.get("since")
        async with ws, rooms.join(name, user=ws.query_params["user"], since=since) as joined:
            recovered = joined.recovery.exact if joined.recovery else False
            await ws.send_json({"type": "welcome", "recovered": recovered})
            nursery.start_soon(joined.forward_to, ws)
            async for text in ws.iter_text():
                await joined.room.history.append({"type": "say", "text": text})

    return app


@pytest.fixture
def rooms() -> Rooms:
    return Rooms(Broadcast(), history=5)


async def test_appended_messages_carry_increasing_offsets_first(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan(), rooms.join("r", user="ann") as ann:
        offsets = [await ann.room.history.append({"n": n}) for n in range(3)]
        assert [int(o) for o in offsets] == sorted({int(o) for o in offsets})
        received = [await ann.messages.receive() for _ in range(3)]
        assert received[0] == f'{{"offset":"{offsets[0]}","n":0}}'  # the first key
        assert [json.loads(m)["offset"] for m in received] == offsets


async def test_only_json_objects_are_kept_and_offset_is_the_rooms(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan(), rooms.join("r", user="ann") as ann:
        with pytest.raises(TypeError):
            await ann.room.history.append(["a", "list"])
        with pytest.raises(ValueError, match="offset"):
            await ann.room.history.append({"offset": "1", "text": "mine"})
        with pytest.raises(ValueError, match="not JSON"):
            await ann.room.history.append("{not json}")
        assert await ann.room.history.append('{"text": "as text"}')


async def test_recovery_is_exact_within_the_bound_and_not_beyond_it(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan(), rooms.join("r", user="ann") as ann:
        history = ann.room.history
        offsets = [await history.append({"n": n}) for n in range(8)]  # 5 kept: n = 3..7
        recovery = await history.recover(offsets[2])  # n=3 onwards are all there
        assert recovery.exact
        assert [json.loads(m)["n"] for m in recovery.messages] == [3, 4, 5, 6, 7]
        assert (await history.recover(offsets[7])).messages == ()  # up to date
        assert (await history.recover(offsets[7])).exact
        for lost in (offsets[1], "1", str(int(offsets[7]) + 1), "x", "", "9" * 30):
            assert not (await history.recover(lost)).exact, lost


async def test_a_resumed_member_gets_the_missed_messages_once_then_live_ones(rooms):
    async with TestClient(history_app(rooms)) as client:
        async with client.websocket("/ws/r?user=ann") as ann:
            assert (await ann.receive_json())["recovered"] is False
            await ann.send("one")
            first = await ann.receive_json()
            async with client.websocket("/ws/r?user=bob") as bob:
                await bob.receive_json()
                for text in ("two", "three"):
                    await bob.send(text)
                    await bob.receive_json()  # stored and published
            # (ann's first socket gets them too; her second one stands for a reconnect)
            # ann reconnects with the offset of the last message she saw
            async with client.websocket(f"/ws/r?user=ann&since={first['offset']}") as again:
                assert (await again.receive_json())["recovered"] is True
                replayed = [await again.receive_json() for _ in range(2)]
                assert [m["text"] for m in replayed] == ["two", "three"]
                await again.send("four")
                live = await again.receive_json()
                assert live["text"] == "four"
                offsets = [int(m["offset"]) for m in (first, *replayed, live)]
                assert offsets == sorted(set(offsets))


async def test_an_offset_from_before_the_bound_is_not_recovered(rooms):
    async with TestClient(history_app(rooms)) as client:
        async with client.websocket("/ws/r?user=ann") as ann:
            await ann.receive_json()
            await ann.send("zero")
            old = (await ann.receive_json())["offset"]
            for n in range(6):
                await ann.send(str(n))
                await ann.receive_json()
        async with client.websocket(f"/ws/r?user=ann&since={old}") as again:
            assert (await again.receive_json())["recovered"] is False
            await again.send("now")
            assert (await again.receive_json())["text"] == "now"  # no replay before it


async def test_no_duplicate_at_the_seam_under_concurrent_publishing(rooms):
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="writer") as writer:
            history = writer.room.history
            seen = await history.append({"n": 0})
            published: list[str] = [seen]

            async def publish_many() -> None:
                for n in range(1, 200):
                    published.append(await history.append({"n": n}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_many)
                await trio.lowlevel.checkpoint()  # let some go out before the resume
                async with rooms.join("r", user="reader", since=seen) as reader:
                    assert reader.recovery is not None and reader.recovery.exact
                    got: list[str] = []

                    class Socket:
                        async def send_frame(self, message: str) -> None:
                            got.append(json.loads(message)["offset"])
                            if len(got) == 199:
                                forwarding.cancel()

                    with trio.CancelScope() as forwarding:
                        await reader.forward_to(Socket())  # type: ignore[arg-type]
            assert got == published[1:]  # every one after `seen`, once, in order


async def test_a_state_update_can_be_kept_in_the_history(rooms, autojump_clock):
    async with rooms.hub.lifespan(), rooms.lifespan(), rooms.join("r", user="ann") as ann:
        update = await ann.room.state.update(
            lambda s: {"high": 5}, announce=lambda s: {"type": "bid", **s}, history=True
        )
        assert update.offset is not None
        message = json.loads(await ann.messages.receive())
        assert message == {"offset": update.offset, "type": "bid", "high": 5}
        recovery = await ann.room.history.recover(str(int(update.offset) - 1))
        assert recovery.exact and len(recovery.messages) == 1


async def test_offsets_of_a_new_life_are_above_the_old_ones(autojump_clock):
    rooms = Rooms(Broadcast(), state_ttl=10.0)
    async with rooms.hub.lifespan(), rooms.lifespan():
        async with rooms.join("r", user="ann") as ann:
            old = await ann.room.history.append({"n": 1})
        await trio.sleep(20)  # the room's record is forgotten
        async with rooms.join("other", user="x"), rooms.join("r", user="ann") as ann:
            assert not (await ann.room.history.recover(old)).exact
            new = await ann.room.history.append({"n": 2})
            assert int(new) > int(old)


async def test_a_bad_since_is_not_recovered_and_not_an_error(rooms):
    async with TestClient(history_app(rooms)) as client:
        for since in ("abc", "-1", "1" * 40, "%F0%9F%98%80"):
            async with client.websocket(f"/ws/r?user=ann&since={since}") as ws:
                assert (await ws.receive_json())["recovered"] is False


async def test_an_up_to_date_resume_skips_a_late_live_copy_of_the_last_message(rooms):
    # A client that saw the room's newest message (through another process) resumes with its
    # offset: exact, nothing to replay. This process's relay may deliver that message after
    # the join (it lags the other one): the member must not get it a second time.
    async with rooms.hub.lifespan(), rooms.lifespan(), rooms.join("r", user="writer") as writer:
        history = writer.room.history
        last = await history.append({"n": 1})
        late = await writer.messages.receive()  # as the relay delivers it
        async with rooms.join("r", user="reader", since=last) as reader:
            assert reader.recovery is not None and reader.recovery.exact
            assert reader.recovery.messages == ()
            reader.room.send_local(late)  # the lagging relay delivers it now
            following = await history.append({"n": 2})
            got: list[str] = []

            class Socket:
                async def send_frame(self, message: str) -> None:
                    got.append(json.loads(message)["offset"])
                    forwarding.cancel()

            with trio.CancelScope() as forwarding:
                await reader.forward_to(Socket())  # type: ignore[arg-type]
        assert got == [following]  # not `last` again
