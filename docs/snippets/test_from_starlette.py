from from_starlette import app
from trioweb.testing import TestClient


async def test_chat() -> None:  # async, under pytest-trio
    async with TestClient(app) as client:
        async with client.websocket("/chat/lobby") as ws:
            await ws.send_json({"hi": 1})
            assert await ws.receive_json() == {"room": "lobby", "echo": {"hi": 1}}
