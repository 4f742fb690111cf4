"""The app tests/test_rooms_processes.py serves with ``trioweb run``, twice, on one Redis.

A lot in an auction, one room per lot. The settings come from the environment, so that the
tests can run it with short TTLs:

- ``ROOMS_REDIS_URL``: the Redis both processes share (required);
- ``ROOMS_PRESENCE_TTL``, ``ROOMS_LEASE_TTL``: the rooms' TTLs in seconds (default 1.0);
- ``ROOMS_LOT_SECONDS``: how long a lot is open from the moment its first owner opens it.

The protocol, JSON over ``/ws/{room}?user=NAME``:

- server -> client, once: ``{"type": "welcome", "pid", "id", "users"}`` (the presence then);
- ``{"type": "presence", "pid", "users", "joined", "left"}`` on every change of presence, from
  a room task in each process (``send_local``: each process tells its own members);
- ``{"type": "tick", "owner": PID, "fence", "n", "closes_in"}`` every ``TICK`` seconds, from
  the owner task: ``closes_in`` is computed from a deadline kept in the room's state and read
  against the store's clock, so that it survives a change of owner;
- client -> server ``{"type": "bid", "amount": N}``; the bid is accepted only if strictly
  higher than the high bid, in one atomic update that also announces it to every member as
  ``{"type": "bid", "seq", "amount", "user", "via": PID}`` (``seq``: 1, 2, 3... per accepted
  bid); the bidder gets ``{"type": "bid_result", "amount", "accepted"}``.

``GET /pid`` answers this process's pid and what runs in it: the room tasks and owner tasks
running now, and the rooms open here (the tests check that a room's tasks stop).
"""

from __future__ import annotations

import os
from typing import Any

import trio

from trioweb import App, Request, WebSocket
from trioweb.broadcast import Broadcast
from trioweb.rooms import Room, Rooms

PID = os.getpid()
PRESENCE_TTL = float(os.environ.get("ROOMS_PRESENCE_TTL", "1.0"))
LEASE_TTL = float(os.environ.get("ROOMS_LEASE_TTL", "1.0"))
LOT_SECONDS = float(os.environ.get("ROOMS_LOT_SECONDS", "30"))
#: Seconds between two ticks of the owner task.
TICK = 0.2

hub = Broadcast(os.environ["ROOMS_REDIS_URL"])
rooms = Rooms(hub, presence_ttl=PRESENCE_TTL, lease_ttl=LEASE_TTL)
app = App()
app.use(hub)
app.use(rooms)

#: What runs in this process now, by kind.
running = {"room_tasks": 0, "owner_tasks": 0}


@rooms.task
async def tell_presence(room: Room) -> None:
    """Each process tells its own members about every change of the room's presence."""
    running["room_tasks"] += 1
    try:
        async for change in room.presence.changes():
            room.send_local(
                {
                    "type": "presence",
                    "pid": PID,
                    "users": room.presence.users(),
                    "joined": [entry.user for entry in change.joined],
                    "left": [entry.user for entry in change.left],
                }
            )
    finally:
        running["room_tasks"] -= 1


@rooms.owner_task
async def auctioneer(room: Room) -> None:
    """Open the lot once (the deadline goes in the state), then tick until the end of time."""
    running["owner_tasks"] += 1
    try:
        start = await room.time()
        opened = await room.state.update(
            lambda state: (
                None if "deadline" in state else {**state, "deadline": start + LOT_SECONDS}
            ),
            fenced=True,
        )
        deadline = opened.state["deadline"]
        fence = room.lease.fence if room.lease is not None else None
        n = 0
        while True:
            n += 1
            closes_in = max(0.0, deadline - await room.time())
            await room.publish(
                {"type": "tick", "owner": PID, "fence": fence, "n": n, "closes_in": closes_in}
            )
            await trio.sleep(TICK)
    finally:
        running["owner_tasks"] -= 1


async def place_bid(room: Room, ws: WebSocket, user: str, amount: int) -> None:
    def raise_to(state: dict[str, Any]) -> dict[str, Any] | None:
        high = state.get("high")
        if high is not None and amount <= high["amount"]:
            return None
        accepted = state.get("accepted", 0) + 1
        return {**state, "high": {"amount": amount, "user": user}, "accepted": accepted}

    def announcement(state: dict[str, Any]) -> dict[str, Any]:
        return {"type": "bid", "seq": state["accepted"], **state["high"], "via": PID}

    result = await room.state.update(raise_to, announce=announcement)
    await ws.send_json({"type": "bid_result", "amount": amount, "accepted": result.applied})


@app.websocket("/ws/{name}")
async def lot(ws: WebSocket, nursery: trio.Nursery, name: str) -> None:
    user = ws.query_params.get("user") or "anonymous"
    async with ws, rooms.join(name, user=user) as member:
        room = member.room
        await ws.send_json(
            {"type": "welcome", "pid": PID, "id": member.id, "users": room.presence.users()}
        )
        nursery.start_soon(member.forward_to, ws)
        # Bids are placed concurrently (a task each), so that they contend in this process as
        # well as across processes.
        async with trio.open_nursery() as bids:
            async for message in ws.iter_json():
                if isinstance(message, dict) and message.get("type") == "bid":
                    amount = message.get("amount")
                    if isinstance(amount, int) and not isinstance(amount, bool):
                        bids.start_soon(place_bid, room, ws, user, amount)


@app.get("/pid")
async def pid(request: Request) -> dict[str, Any]:
    return {"pid": PID, **running, "rooms": sorted(room.name for room in rooms)}
