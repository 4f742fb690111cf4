import trio

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast
from trioweb.rooms import Room, Rooms

app = App()
hub = app.use(Broadcast())
rooms = app.use(Rooms(hub))  # rooms run on the hub: register it first


@rooms.task
async def announce_presence(room: Room) -> None:
    """Runs while the room has members: tells them who is in it, at every change."""
    async for _ in room.presence.changes():
        room.send_local({"type": "presence", "names": room.presence.users()})


@app.websocket("/chat/{room}")
async def chat(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    name = ws.query_params.get("name", "anonymous")
    async with ws, rooms.join(room, user=name) as member:
        nursery.start_soon(member.forward_to, ws)
        async for message in ws.iter_json():
            await member.room.publish(
                {"type": "message", "name": name, "text": message["text"]}
            )
