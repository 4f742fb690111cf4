from echo import app
from trioweb.testing import TestClient


async def test_echo() -> None:
    async with TestClient(
        app
    ) as client:  # runs the app's startup, and its shutdown at the end
        async with client.websocket("/ws") as ws:
            await ws.send("hello")
            assert await ws.receive() == "hello"
            await ws.send(b"\x00\x01")
            assert await ws.receive() == b"\x00\x01"
