import pytest

from trioweb.testing import TestClient, WebSocketClosed
from typed_chat import Said, Say, app


async def test_a_message_round_trips() -> None:
    async with TestClient(app) as client, client.websocket("/chat/ann") as ws:
        await ws.send_typed(Say("hello"))
        assert await ws.receive_typed(Said) == Said(user="ann", text="hello")


async def test_a_bad_message_gets_an_error_frame_and_the_socket_goes_on() -> None:
    async with TestClient(app) as client, client.websocket("/chat/ann") as ws:
        await ws.send_json({"type": "say", "text": 42})
        assert await ws.receive_json() == {
            "type": "error",
            "code": "bad_message",
            "detail": "$.text: expected str, got int",
        }
        await ws.send_json({"type": "shout", "text": "HI"})
        error = await ws.receive_json()
        known = "(known: 'say', 'typing')"
        assert error["detail"] == f"$.type: unknown message type 'shout' {known}"
        await ws.send_json({"type": "typing", "active": True})
        typing = {"type": "is_typing", "user": "ann", "active": True}
        assert await ws.receive_json() == typing


async def test_the_sixth_bad_message_closes_the_socket_with_1008() -> None:
    async with TestClient(app) as client, client.websocket("/chat/ann") as ws:
        for _ in range(5):
            await ws.send("not even JSON")
            assert (await ws.receive_json())["type"] == "error"
        await ws.send("not even JSON")
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive()
    assert closed.value.code == 1008


async def test_the_app_describes_its_protocol() -> None:
    async with TestClient(app) as client:
        document = (await client.get("/asyncapi.json")).json()
    channel = document["channels"]["chat"]
    assert channel["address"] == "/chat/{user}"
    sent = {"Said", "IsTyping", "InvalidMessageReply"}  # the error frame too
    assert set(channel["messages"]) == {"Say", "Typing", *sent}
