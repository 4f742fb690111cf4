import trio

from trioweb import App, WebSocket, abort

app = App()


@app.websocket("/ws/{room}")
async def room_socket(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    if ws.query_params.get("token") != "s3cret":
        abort(401)  # before accept: a real HTTP 401, as in Quart
    await ws.accept()

    async def producer() -> None:
        while True:
            await ws.send(f"tick in {room}")
            await trio.sleep(1)

    nursery.start_soon(producer)  # the connection's nursery: no need to open one
    async for message in ws:
        await ws.send(f"echo: {message}")
