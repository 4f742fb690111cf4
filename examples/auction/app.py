"""A live auction per room: members, bids, chat and one countdown, across processes.

What each piece of :mod:`trioweb.rooms` does here:

- the lot on sale lives in ``room.state`` (``{"lot": n, "deadline": t, "high": ...}``): a bid
  is one compare-and-set across processes, announced in the same step, so every member sees
  the bids in the order they were accepted;
- the countdown is an owner task: it runs in exactly one process, and the deadline it counts
  down to is in the state, so a process taking over goes on where the last owner stopped;
- each process tells its own members about presence changes (a room task).
"""

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from trioweb import App, FileResponse, JSONResponse, Request, WebSocket, abort
from trioweb.broadcast import Broadcast
from trioweb.rooms import Room, Rooms

from .protocol import (
    Bid,
    BidMade,
    Chat,
    Error,
    High,
    Presence,
    Said,
    Sent,
    Sold,
    Tick,
    Welcome,
    wire,
)

MAX_NAME = 40  # a user's name, cut to this length
MAX_ROOM = 100


def closes_in(lot: dict[str, Any], now: float) -> int:
    """Whole seconds until the lot closes, rounded up: 1 until the very end, 0 once it is over
    (to the millisecond first, so that float noise such as 2.0000000001 is not 3)."""
    return max(0, math.ceil(round(lot["deadline"] - now, 3)))


def make_app(env: Mapping[str, str] = os.environ) -> App:
    """The auction app, configured by ``env`` (see the package's docstring)."""
    lot_seconds = float(env.get("AUCTION_LOT_SECONDS", "60"))
    if not lot_seconds >= 1:  # (NaN too) shorter lots would be sold many times a second
        raise ValueError(f"AUCTION_LOT_SECONDS must be at least 1, not {lot_seconds}")
    hub = Broadcast(env.get("TRIOWEB_BROADCAST_URL") or None)
    rooms = Rooms(
        hub,
        presence_ttl=float(env.get("AUCTION_PRESENCE_TTL", "5")),
        history=int(env.get("AUCTION_HISTORY", "1000")),  # bids, chats, sales kept per room
    )
    app = App()
    app.use(hub)
    app.use(rooms)
    app.serve_client("/trioweb.js")  # the browser client, which the page imports

    async def current_lot(room: Room) -> tuple[dict[str, Any], float]:
        """The lot on sale (opening the room's first one if need be), and the store's time."""
        now = await room.time()
        first = {"lot": 1, "deadline": now + lot_seconds, "high": None}
        update = await room.state.update(lambda state: None if state else first)
        return update.state, now

    @rooms.task  # in every process where the room is open
    async def tell_presence(room: Room) -> None:
        # Changes that pile up while we are busy come as one. Each sends the whole list, even
        # if only a second tab of someone present came or went: a member's own join is a
        # change, so the list sent after it is never older than the member's welcome.
        async for _ in room.presence.changes():
            room.send_local(wire(Presence(room.presence.users())))

    @rooms.owner_task  # in exactly one process; cancelled there if it loses the lease
    async def auctioneer(room: Room) -> None:
        while True:
            # Read from the state each time: a new owner picks the countdown up at the
            # deadline where the last one left it.
            lot, now = await current_lot(room)
            left = closes_in(lot, now)
            if left == 0:
                await sell(room, lot, now)
                continue
            # Sleep to the next whole second before the deadline, then say so.
            await trio.sleep(lot["deadline"] - now - (left - 1))
            if left > 1:
                await room.publish(wire(Tick(left - 1)))

    async def sell(room: Room, lot: dict[str, Any], now: float) -> None:
        """Sell ``lot`` to its high bidder and put the next one on sale."""
        sold = wire(Sold(**(lot["high"] or {"amount": None, "by": None})))
        after = {"lot": lot["lot"] + 1, "deadline": now + lot_seconds, "high": None}
        # Only the lot as read (a bid that slipped in since: the auctioneer reads again), and
        # fenced: if another process has taken the room over, the write is refused
        # (LeaseLost, which ends this task), so a lot is never sold twice.
        update = await room.state.update(
            lambda state: after if state == lot else None,
            announce=lambda _: sold,
            fenced=True,
            history=True,  # kept, with an offset, for members that resume
        )
        if update.applied:  # tell the new lot's length at once
            await room.publish(wire(Tick(closes_in(after, now))))

    async def bid(room: Room, user: str, amount: int) -> Error | None:
        """Place a bid; ``None`` if accepted (announced to everyone), else the error."""
        lot, now = await current_lot(room)

        def place(state: dict[str, Any]) -> dict[str, Any] | None:
            # On the lot the bidder saw, while it is open, and higher: else no write, no message.
            high = state["high"]["amount"] if state["high"] else 0
            if state["lot"] == lot["lot"] and closes_in(state, now) > 0 and amount > high:
                return {**state, "high": {"amount": amount, "by": user}}
            return None

        update = await room.state.update(
            place, announce=lambda new: wire(BidMade(**new["high"])), history=True
        )
        state = update.state
        if update.applied:
            return None
        if state["lot"] == lot["lot"] and closes_in(state, now) > 0:
            return Error("too_low", high=state["high"]["amount"])
        # Not in the protocol: a bid racing with the sale must not carry over to the
        # next lot, and "too_low" would be a lie.
        return Error("lot_closed", detail="this lot has closed")

    app.serve_asyncapi("/asyncapi.json", title="trioweb auction", version="1.0.0")

    @app.get("/")
    async def page(request: Request) -> FileResponse:
        return FileResponse(Path(__file__).with_name("index.html"))

    @app.get("/rooms")
    async def open_rooms(request: Request) -> JSONResponse:
        # Connections (a user with two tabs counts twice): in every process, and here.
        counts = {r.name: {"members": len(r.presence), "local": len(r.members)} for r in rooms}
        return JSONResponse({name: n for name, n in counts.items() if n["local"]})

    # Typed: an invalid message is answered with the field's path (invalid_messages="reply").
    # A page's refused handshake is a close it can read (4401 and the reason: its client
    # stops trying); clients that send no Origin still get the HTTP status.
    @app.websocket(
        "/ws/{room}",
        receives=Bid | Chat,
        sends=Sent,
        invalid_messages="reply",
        browser_denials="close",
    )
    async def auction(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
        user = ws.query_params.get("user", "").strip()[:MAX_NAME]
        if not user:
            abort(401, "a user name is required: /ws/ROOM?user=NAME")  # before the accept
        if len(room) > MAX_ROOM:
            abort(400, f"a room name is at most {MAX_ROOM} characters")
        since = ws.query_params.get("since")  # the last offset a reconnecting client saw
        async with ws, rooms.join(room, user=user, since=since) as member:
            here = member.room
            # The members right at the join, before any await: a presence change after this
            # moment is a later "presence" message (see tell_presence).
            members = here.presence.users()
            lot, now = await current_lot(here)
            high = High(**lot["high"]) if lot["high"] else None
            # With ?since=: true if every bid, chat and sale since follows (else a reset).
            recovered = member.recovery.exact if member.recovery is not None else None
            await ws.send_typed(Welcome(user, members, high, closes_in(lot, now), recovered))
            # Then what it missed (if it resumed), then the room's messages queued since the
            # join, none twice.
            nursery.start_soon(member.forward_to, ws)
            # Decoded and validated as Bid | Chat; an invalid message gets an error frame
            # naming the field (invalid_messages="reply"), and the socket stays open.
            async for message in ws.iter_typed():
                match message:
                    case Chat(text=text):
                        await here.history.append(wire(Said(user, text)))
                    case Bid(amount=amount):
                        if (error := await bid(here, user, amount)) is not None:
                            await ws.send_typed(error)

    return app


app = make_app()
