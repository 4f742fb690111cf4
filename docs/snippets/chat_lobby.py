import trio

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast

app = App()
hub = app.use(Broadcast())  # in-process; started with the app, stopped with it


@app.websocket("/chat")
async def chat(ws: WebSocket, nursery: trio.Nursery) -> None:
    name = ws.query_params.get("name", "anonymous")
    async with ws, hub.subscribe("lobby") as subscription:
        nursery.start_soon(subscription.forward_to, ws)  # the room -> this socket
        async for message in ws.iter_json():  # this socket -> the room
            await hub.publish("lobby", {"name": name, "text": message["text"]})
