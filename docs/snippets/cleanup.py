import trio

from trioweb import App, WebSocket

app = App()
online: set[str] = set()
audit: list[str] = []


async def save(line: str) -> None:  # stands for a database write
    await trio.sleep(0.01)
    audit.append(line)


@app.websocket("/presence/{user}")
async def presence(ws: WebSocket, user: str) -> None:
    async with ws:
        online.add(user)
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            # 1. Code that does not await always runs, even in a cancelled scope.
            online.discard(user)
            # 2. Code that awaits must be shielded from the cancellation, and bounded.
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await save(f"{user} left")


@app.after_websocket
async def record_close(ws: WebSocket) -> None:
    # 3. Runs after every connection, outside its cancelled scope,
    #    with the close code known.
    await save(f"{ws.path} closed with {ws.close_code}")
