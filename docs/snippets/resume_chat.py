import os
from functools import partial
from typing import Any

import trio

from trioweb import App, CloseCode, WebSocket, WebSocketClose
from trioweb.broadcast import Broadcast, Gap
from trioweb.rooms import Member, Room, Rooms

app = App()
hub = app.use(Broadcast(os.environ.get("CHAT_BROKER_URL")))
# --8<-- [start:setup]
# Each room keeps its last 500 stored messages for the clients that come back.
rooms = app.use(Rooms(hub, history=500))
# --8<-- [end:setup]


# --8<-- [start:presence]
@rooms.task
async def announce_presence(room: Room) -> None:
    # Ephemeral: not stored, no offset. A client that comes back finds the names
    # in its welcome instead.
    async for _ in room.presence.changes():
        room.send_local({"type": "presence", "names": room.presence.users()})


# --8<-- [end:presence]


# --8<-- [start:handler]
@app.websocket("/chat/{room}")
async def chat(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    name = ws.query_params.get("name", "").strip()[:40] or "anonymous"
    since = ws.query_params.get("since")  # the last offset this client saw, if any
    async with ws, rooms.join(room, user=name, since=since) as member:
        # 1. The welcome, first: the current state, and whether what follows is
        #    everything the client missed.
        state = await member.room.state.get()
        welcome = {
            "type": "welcome",
            "names": member.room.presence.users(),
            "topic": state.get("topic"),
        }
        if member.recovery is not None:  # the client gave a since
            welcome["recovered"] = member.recovery.exact
        await ws.send_json(welcome)

        # 2. What it missed (when the recovery is exact), then the live messages,
        #    none twice.
        async def lost(gap: Gap) -> None:
            # Live messages were lost on their way (the broker reconnected): the
            # client comes back with its last offset, and the history fills in.
            raise WebSocketClose(CloseCode.TRY_AGAIN_LATER, "messages lost: resume")

        nursery.start_soon(partial(member.forward_to, ws, on_gap=lost))

        # 3. What members say is stored, each message with an offset.
        async for message in ws.iter_json():
            await say(member, message)


# --8<-- [end:handler]


# --8<-- [start:say]
async def say(member: Member, message: Any) -> None:
    if not isinstance(message, dict):
        raise WebSocketClose(CloseCode.UNSUPPORTED_DATA, "expected an object")
    if isinstance(message.get("text"), str):
        # A chat line: published to the room and kept in its history, in one step.
        line = {"type": "message", "name": member.user, "text": message["text"]}
        await member.room.history.append(line)
    elif isinstance(message.get("topic"), str):
        # The room's topic is state: written, announced and kept in one step.
        topic = message["topic"]
        await member.room.state.update(
            lambda state: {**state, "topic": topic},
            announce=lambda state: {"type": "topic", "topic": topic, "by": member.user},
            history=True,
        )
    else:
        raise WebSocketClose(CloseCode.UNSUPPORTED_DATA, 'expected "text" or "topic"')


# --8<-- [end:say]
