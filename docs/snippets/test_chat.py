import pytest

from chat import app
from trioweb.testing import TestClient, WebSocketClosed


async def test_members_of_a_room_hear_each_other() -> None:
    async with TestClient(app) as client:
        async with client.websocket("/chat/trio?name=alice") as alice:
            alone = {"type": "presence", "names": ["alice"]}
            assert await alice.receive_json() == alone
            async with client.websocket("/chat/trio?name=bob") as bob:
                both = {"type": "presence", "names": ["alice", "bob"]}
                assert await alice.receive_json() == both
                assert await bob.receive_json() == both
                await bob.send_json({"text": "hi alice"})
                said = {"type": "message", "name": "bob", "text": "hi alice"}
                assert await alice.receive_json() == said
                assert await bob.receive_json() == said
            # Leaving the block closed bob's socket;
            # leaving the room took him out of its presence.
            assert await alice.receive_json() == alone


async def test_rooms_are_separate() -> None:
    async with TestClient(app) as client:
        async with client.websocket("/chat/a?name=ann") as ann:
            async with client.websocket("/chat/b?name=ben") as ben:
                assert (await ann.receive_json())["names"] == ["ann"]
                assert (await ben.receive_json())["names"] == ["ben"]
                await ben.send_json({"text": "only for room b"})
                assert (await ben.receive_json())["text"] == "only for room b"
            await ann.send_json({"text": "room a"})  # ann never saw ben's message
            assert (await ann.receive_json())["text"] == "room a"


@pytest.mark.parametrize(("sent", "code"), [("{not json", 1007), ('{"txt": 1}', 1003)])
async def test_bad_messages_close_the_socket(sent: str, code: int) -> None:
    async with TestClient(app) as client:
        async with client.websocket("/chat/trio?name=mallory") as ws:
            await ws.receive_json()  # who is in the room
            await ws.send(sent)
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
    assert closed.value.code == code
