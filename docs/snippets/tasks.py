import trio

from trioweb import App, WebSocket

app = App()


@app.websocket("/ticks")
async def ticks(ws: WebSocket, nursery: trio.Nursery) -> None:
    await ws.accept()
    every = 1.0

    async def produce() -> None:  # server -> client, on its own schedule
        n = 0
        while True:
            n += 1
            await ws.send_json({"tick": n})
            await trio.sleep(every)

    async def consume() -> None:  # client -> server, whenever it speaks
        nonlocal every
        async for command in ws.iter_json():
            every = float(command["every"])

    nursery.start_soon(produce)
    nursery.start_soon(consume)
    # The handler returns here. The socket stays open while its tasks run,
    # and the client leaving cancels both.
