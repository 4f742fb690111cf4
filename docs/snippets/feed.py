import trio

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast

app = App()
hub = app.use(Broadcast())
score = {"home": 0, "away": 0}  # stands for the real source of truth


@app.on_startup
async def start_feed() -> None:
    async def play() -> None:
        while True:
            await trio.sleep(1)
            score["home"] += 1
            # Encoded to JSON once, however many watch.
            await hub.publish("score", score)

    app.nursery.start_soon(play)  # one task for the whole app, not one per socket


@app.websocket("/score")
async def watch(ws: WebSocket) -> None:
    # "latest": a watcher that falls behind skips to the newest score,
    # instead of lagging.
    async with ws, hub.subscribe("score", on_overflow="latest") as subscription:
        await ws.send_json(score)  # the state now, then every change
        await subscription.forward_to(ws)
