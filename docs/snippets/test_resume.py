from typing import Any

import trio.testing

from resume_chat import app
from trioweb.testing import TestClient, TestWebSocket


async def stored(ws: TestWebSocket) -> dict[str, Any]:
    """The next message kept in the history: presence lists have no offset."""
    while "offset" not in (message := await ws.receive_json()):
        pass
    return message


async def test_a_client_that_comes_back_gets_what_it_missed_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with TestClient(app) as client:
        async with client.websocket("/chat/lobby?name=ann") as ann:
            assert "recovered" not in await ann.receive_json()  # a first visit
            await ann.send_json({"text": "hello"})
            last_seen = (await stored(ann))["offset"]
        # ann's connection dropped; the room goes on without her.
        async with client.websocket("/chat/lobby?name=bob") as bob:
            await bob.receive_json()  # the welcome
            await bob.send_json({"topic": "lunch"})
            await bob.send_json({"text": "anyone?"})
            assert (await stored(bob))["type"] == "topic"
            assert (await stored(bob))["type"] == "message"
        # ann comes back with the last offset she saw.
        async with client.websocket(f"/chat/lobby?name=ann&since={last_seen}") as ann:
            welcome = await ann.receive_json()
            assert welcome["recovered"] is True
            assert welcome["topic"] == "lunch"  # the state, as it is now
            missed = [await stored(ann), await stored(ann)]
            assert [m["type"] for m in missed] == ["topic", "message"]
            await ann.send_json({"text": "me!"})
            back = await stored(ann)  # then the live messages, none twice
            assert back["text"] == "me!"
            offsets = [int(m["offset"]) for m in [*missed, back]]
            assert int(last_seen) < offsets[0] < offsets[1] < offsets[2]


async def test_an_offset_the_room_cannot_vouch_for_is_a_fresh_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with TestClient(app) as client:
        async with client.websocket("/chat/lobby?name=ann&since=12345") as ann:
            welcome = await ann.receive_json()
            # Not recovered: the client drops what it had and starts from the welcome.
            assert welcome["recovered"] is False
            assert welcome["names"] == ["ann"]
