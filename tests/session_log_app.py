"""The app of tests/test_session_log.py: echo on a route with a parameter, an error, a limit."""

from trioweb import App, WebSocket

app = App(max_message_size=100)


@app.websocket("/ws/{room}")
async def echo(ws: WebSocket, room: str) -> None:
    await ws.accept()
    async for message in ws:
        await ws.send(message)


@app.websocket("/boom")
async def boom(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive()
    raise RuntimeError("boom")


@app.websocket("/private")
async def private(ws: WebSocket) -> None:
    await ws.reject(403)
