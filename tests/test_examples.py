"""Each example app does what its docstring says."""

import pytest
import trio

from examples.echo import app as echo_app
from examples.ticker import app as ticker_app
from trioweb.testing import TestClient, WebSocketClosed


async def test_echo_page_and_socket():
    async with TestClient(echo_app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert "new WebSocket" in page.text
        async with client.websocket("/ws") as ws:
            await ws.send("hello")
            assert await ws.receive() == "hello"
            await ws.send(b"\x01\x02")
            assert await ws.receive() == b"\x01\x02"


async def test_ticker_streams_and_takes_commands(autojump_clock):
    async with TestClient(ticker_app) as client, client.websocket("/ticker/ACME") as ws:
        first = await ws.receive_json()
        assert first == {"symbol": "ACME", "n": 1}
        await ws.send_json({"interval": 2})
        start = None
        # After the change, ticks arrive two (fake) seconds apart.
        for _ in range(3):
            await ws.receive_json()
            now = trio.current_time()
            if start is not None:
                assert now - start == pytest.approx(2, abs=0.1)
            start = now


async def test_ticker_rejects_a_bad_command():
    async with TestClient(ticker_app) as client, client.websocket("/ticker/ACME") as ws:
        await ws.send_json(["not", "a", "command"])
        with pytest.raises(WebSocketClosed) as closed:
            while True:
                await ws.receive()
    assert closed.value.code == 1008


async def test_chat_page_and_rooms():
    from examples.chat import app as chat_app

    async with TestClient(chat_app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "new WebSocket" in page.text
        async with client.websocket("/ws/lobby?name=alice") as alice:
            assert await alice.receive_json() == {"type": "join", "name": "alice"}
            async with client.websocket("/ws/lobby?name=bob") as bob:
                assert await alice.receive_json() == {"type": "join", "name": "bob"}
                assert await bob.receive_json() == {"type": "join", "name": "bob"}
                async with client.websocket("/ws/elsewhere?name=carol") as carol:
                    assert await carol.receive_json() == {"type": "join", "name": "carol"}
                    await bob.send_json({"text": "hi alice"})
                    expected = {"type": "message", "name": "bob", "text": "hi alice"}
                    assert await alice.receive_json() == expected
                    assert await bob.receive_json() == expected
                    await carol.send_json({"text": "anyone?"})
                    assert (await carol.receive_json())["text"] == "anyone?"
            assert await alice.receive_json() == {"type": "leave", "name": "bob"}
            await alice.send_json({"text": "still here"})
            assert (await alice.receive_json())["text"] == "still here"


@pytest.mark.parametrize(("sent", "code"), [("{not json", 1007), ('{"nope": 1}', 1003)])
async def test_chat_closes_on_bad_messages(sent, code):
    from examples.chat import app as chat_app

    async with TestClient(chat_app) as client, client.websocket("/ws/r?name=x") as ws:
        assert (await ws.receive_json())["type"] == "join"
        await ws.send(sent)
        with pytest.raises(WebSocketClosed) as closed:
            while True:
                await ws.receive()
    assert closed.value.code == code
