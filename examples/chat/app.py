"""The chat app: a page, and one WebSocket per member of a room (:mod:`trioweb.rooms`).

The protocol, on ``/ws/{room}?name=NAME`` (``&since=OFFSET`` to resume), all JSON:

- the client sends ``{"text": "..."}``; anything else closes the socket (1007 for invalid
  JSON, 1003 for JSON that is not such an object);
- the server sends first ``{"type": "welcome", "name": ..., "names": [...], "recovered": ...}``:
  the member's name and who is in the room (each name once, sorted); ``recovered`` is ``true``
  if the resume from ``since`` was exact (what was missed follows), ``false`` if it could not
  be (start over), ``null`` without ``since``;
- then ``{"offset": "7", "type": "message", "name": ..., "text": ...}`` for each message said
  in the room, kept in the room's history with its offset (what a client resumes from);
- and ``{"type": "presence", "names": [...]}`` each time the room's members change: who joined
  and who left is the difference with the last list.

A room name longer than ``MAX_ROOM`` is refused (400; 4400 with its reason for a page).
"""

import os
from functools import partial
from pathlib import Path

import trio

from trioweb import App, FileResponse, Request, WebSocket, WebSocketClose, abort
from trioweb.broadcast import Broadcast, Gap
from trioweb.rooms import Room, Rooms

MAX_TEXT = 2000
MAX_NAME = 40
MAX_ROOM = 100

# None: in-process (one worker). A redis:// URL: rooms shared by every worker and host.
hub = Broadcast(os.environ.get("TRIOWEB_BROADCAST_URL") or None)
rooms = Rooms(hub, history=1000)  # the last 1000 messages of each room, for resuming members
app = App()
app.use(hub)
app.use(rooms)
app.serve_client("/trioweb.js")  # the browser client, which the page imports


@app.get("/")
async def page(request: Request) -> FileResponse:
    return FileResponse(Path(__file__).with_name("index.html"))


@rooms.task  # in each process where the room is open: tell its members there who is here
async def tell_presence(room: Room) -> None:
    async for _ in room.presence.changes():  # a member's own join is a change too
        room.send_local({"type": "presence", "names": room.presence.users()})


async def resume_instead(gap: Gap) -> None:
    # The broker lost messages on their way here: close, so that the client comes back with
    # ?since= and gets them from the history.
    raise WebSocketClose(1013, f"missed messages ({gap.reason}): reconnect")


# browser_denials="close": a page sees a refusal as 4400 and its reason, and stops trying.
@app.websocket("/ws/{room}", browser_denials="close")
async def chat(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    if len(room) > MAX_ROOM:
        abort(400, f"a room name is at most {MAX_ROOM} characters")
    name = ws.query_params.get("name", "").strip()[:MAX_NAME] or "anonymous"
    since = ws.query_params.get("since")  # the last offset a reconnecting client saw
    async with ws, rooms.join(room, user=name, since=since) as member:
        # With ?since=: whether everything said since follows (else the client starts over).
        recovered = member.recovery.exact if member.recovery is not None else None
        names = member.room.presence.users()  # at the join: a later change is a "presence"
        await ws.send_json(
            {"type": "welcome", "name": name, "names": names, "recovered": recovered}
        )
        # Then what it missed (if it resumed exactly), then the room's messages, none twice.
        nursery.start_soon(partial(member.forward_to, ws, on_gap=resume_instead))
        async for message in ws.iter_json():  # bad JSON closes with 1007
            text = message.get("text") if isinstance(message, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise WebSocketClose(1003, 'expected {"text": "..."}')
            said = {"type": "message", "name": name, "text": text[:MAX_TEXT]}
            await member.room.history.append(said)  # to every member, with an offset
