"""Rooms: a room is a scope, as a connection is, across processes.

```python
hub = Broadcast(url)                       # None: in-process; redis://...: across processes
rooms = Rooms(hub)
app.use(hub)
app.use(rooms)

@rooms.owner_task                          # in exactly one process at a time
async def countdown(room: Room) -> None: ...

@app.websocket("/ws/{name}")
async def ws(ws, nursery, name):
    async with ws, rooms.join(name, user=ws.query_params["user"]) as member:
        await ws.send_json({"members": member.room.presence.users()})
        nursery.start_soon(member.forward_to, ws)
        async for message in ws.iter_json():
            await member.room.publish(message)
```
"""

from ._history import RoomHistory
from ._presence import Presence, PresenceChange, PresenceChanges
from ._room import Member, Room, RoomTask
from ._rooms import Rooms
from ._state import RoomState, StateUpdate
from ._store import Lease, PresenceEntry, Recovery
from .errors import InvalidName, LeaseLost, RoomFailed, RoomUnavailable

__all__ = [
    "InvalidName",
    "Lease",
    "LeaseLost",
    "Member",
    "Presence",
    "PresenceChange",
    "PresenceChanges",
    "PresenceEntry",
    "Recovery",
    "Room",
    "RoomFailed",
    "RoomHistory",
    "RoomState",
    "RoomTask",
    "RoomUnavailable",
    "Rooms",
    "StateUpdate",
]
