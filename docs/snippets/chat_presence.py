import trio

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast

app = App()
hub = app.use(Broadcast())


@app.websocket("/chat/{room}")
async def chat(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    name = ws.query_params.get("name", "anonymous")
    topic = f"chat:{room}"
    async with ws, hub.subscribe(topic) as subscription:
        nursery.start_soon(subscription.forward_to, ws)
        await hub.publish(topic, {"type": "join", "name": name})
        try:
            async for message in ws.iter_json():
                await hub.publish(
                    topic, {"type": "message", "name": name, "text": message["text"]}
                )
        finally:
            # Runs however the handler ends, even when the client's disconnect
            # cancelled it.
            # Cancelled code cannot await, so shield the last word, and bound it.
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await hub.publish(topic, {"type": "leave", "name": name})
