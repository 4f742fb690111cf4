import os
from typing import Any

import trio

from trioweb import App, CloseCode, WebSocket, WebSocketClose
from trioweb.broadcast import Broadcast
from trioweb.rooms import Member, Room, Rooms

app = App()
# --8<-- [start:setup]
# No URL: rooms live in this process. A redis:// URL: rooms shared by every process.
hub = app.use(Broadcast(os.environ.get("AUCTION_BROKER_URL")))
rooms = app.use(Rooms(hub))  # after the hub: rooms run on top of it
# --8<-- [end:setup]

#: How long an auction takes bids, from the first time its room opens anywhere.
BIDDING_TIME = 60.0


# --8<-- [start:handler]
@app.websocket("/auction/{item}")
async def auction(ws: WebSocket, nursery: trio.Nursery, item: str) -> None:
    user = ws.query_params.get("user", "")[:40] or "anonymous"  # authenticate, for real
    async with ws, rooms.join(item, user=user) as member:
        # The member receives the room's messages from the join on: send the state
        # first, then what came after it. A bid in between arrives twice, never zero.
        await ws.send_json({"type": "state", **await member.room.state.get()})
        nursery.start_soon(member.forward_to, ws)
        async for message in ws.iter_json():
            await bid(ws, member, message)


# --8<-- [end:handler]


# --8<-- [start:bid]
async def bid(ws: WebSocket, member: Member, message: Any) -> None:
    amount = message.get("bid") if isinstance(message, dict) else None
    if not isinstance(amount, int) or amount <= 0:
        raise WebSocketClose(CloseCode.UNSUPPORTED_DATA, 'expected {"bid": 1 or more}')

    def accept(state: dict[str, Any]) -> dict[str, Any] | None:
        # May run more than once (another process wrote first): no side effects here.
        if state.get("closed") or amount <= state.get("price", 0):
            return None  # refused: nothing written, nothing announced
        return {**state, "price": amount, "bidder": member.user}

    def announce(state: dict[str, Any]) -> dict[str, Any]:
        return {"type": "bid", "price": state["price"], "bidder": state["bidder"]}

    # One atomic step across processes: check, write, and publish the announcement.
    update = await member.room.state.update(accept, announce=announce)
    if not update.applied:
        await ws.send_json({"type": "refused", "price": update.state.get("price", 0)})


# --8<-- [end:bid]


# --8<-- [start:watchers]
@rooms.task  # in every process where the room is open, while it is open there
async def count_watchers(room: Room) -> None:
    async for _ in room.presence.changes():
        # Computed by each process from its own view: for its own members only.
        room.send_local(
            {
                "type": "watchers",
                "people": len(room.presence.users()),  # a user with two tabs: one
                "tabs": len(room.presence),  # ... and two presences
            }
        )


# --8<-- [end:watchers]


# --8<-- [start:owner]
@rooms.owner_task  # in one process at a time, the room's owner
async def close_when_time_is_up(room: Room) -> None:
    now = await room.time()  # the store's clock, the same in every process

    def open_once(state: dict[str, Any]) -> dict[str, Any] | None:
        if "closes_at" in state:
            return None
        return {**state, "closes_at": now + BIDDING_TIME}

    # The deadline lives in the room's state: an owner that takes over finds it there,
    # and does not start the clock again.
    opened = await room.state.update(open_once, fenced=True)
    await trio.sleep(max(0.0, opened.state["closes_at"] - now))

    def close(state: dict[str, Any]) -> dict[str, Any] | None:
        return None if state.get("closed") else {**state, "closed": True}

    def sold(state: dict[str, Any]) -> dict[str, Any]:
        price, bidder = state.get("price", 0), state.get("bidder")
        return {"type": "sold", "price": price, "bidder": bidder}

    # fenced=True: refused (LeaseLost) if this process lost the room meanwhile.
    await room.state.update(close, announce=sold, fenced=True)


# --8<-- [end:owner]
