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
        async for message in ws.iter_json():
            await hub.publish(topic, {"name": name, "text": message["text"]})
