import os
from functools import partial

import trio

from trioweb import App, CloseCode, WebSocket, WebSocketClose
from trioweb.broadcast import Broadcast, Gap
from trioweb.rooms import Room, Rooms

app = App(max_message_size=4096)  # a bigger message closes the socket with 1009
# --8<-- [start:hub]
# No URL: rooms live in this process.
# A redis:// URL: rooms shared by every process and host.
hub = app.use(Broadcast(os.environ.get("CHAT_BROKER_URL")))
# --8<-- [end:hub]
# A member more than 100 messages behind is closed with 1013; the others go on.
rooms = app.use(Rooms(hub, max_buffer=100))


@rooms.task
async def announce_presence(room: Room) -> None:
    async for _ in room.presence.changes():
        room.send_local({"type": "presence", "names": room.presence.users()})


@app.websocket("/chat/{room}")
async def chat(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    name = ws.query_params.get("name", "").strip()[:40] or "anonymous"
    async with ws, rooms.join(room, user=name) as member:

        async def resync(gap: Gap) -> None:  # the broker lost messages: tell the client
            await ws.send_json({"type": "gap", "reason": gap.reason})

        nursery.start_soon(partial(member.forward_to, ws, on_gap=resync))
        async for message in ws.iter_json():  # invalid JSON closes with 1007
            text = message.get("text") if isinstance(message, dict) else None
            if not isinstance(text, str):
                raise WebSocketClose(
                    CloseCode.UNSUPPORTED_DATA, 'expected {"text": "..."}'
                )
            await member.room.publish({"type": "message", "name": name, "text": text})
