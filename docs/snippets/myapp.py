import trio

from trioweb import App, Request, WebSocket, abort

app = App(idle_timeout=60)


@app.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    async with ws:
        async for message in ws:
            await ws.send(message)


@app.websocket("/private")
async def private(ws: WebSocket) -> None:
    if ws.authorization is None or ws.authorization.token != "s3cret":
        abort(401, "log in first", {"www-authenticate": "Bearer"})
    async with ws:
        await ws.send_json({"secret": 42})


@app.websocket("/countdown/{start:int}")
async def countdown(ws: WebSocket, start: int) -> None:
    await ws.accept()
    for n in range(start, 0, -1):
        await ws.send_json(n)
        await trio.sleep(1)
    await ws.close(4000, "liftoff")


@app.post("/notes")
async def add_note(request: Request) -> tuple[dict[str, object], int]:
    note = await request.json()
    return {"saved": note}, 201
