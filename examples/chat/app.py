"""The chat app: a page, and one WebSocket per member, fanned out through the broadcast hub."""

import os
from functools import partial
from pathlib import Path

import trio

from trioweb import App, FileResponse, Request, WebSocket, WebSocketClose
from trioweb.broadcast import Broadcast, Gap

MAX_TEXT = 2000
MAX_NAME = 40

# None: in-process (one worker). A redis:// URL: rooms shared by every worker and host.
hub = Broadcast(os.environ.get("TRIOWEB_BROADCAST_URL") or None, max_buffer=256)
app = App()
app.use(hub)


@app.get("/")
async def page(request: Request) -> FileResponse:
    return FileResponse(Path(__file__).with_name("index.html"))


@app.websocket("/ws/{room}")
async def chat(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    name = ws.query_params.get("name", "").strip()[:MAX_NAME] or "anonymous"
    topic = f"chat:{room}"
    async with ws, hub.subscribe(topic) as subscription:

        async def tell_about_gap(gap: Gap) -> None:
            await ws.send_json({"type": "gap", "reason": gap.reason})

        # Room -> this socket. A member too slow to keep up is closed with 1013 and told so;
        # everyone else goes on at full speed.
        nursery.start_soon(partial(subscription.forward_to, ws, on_gap=tell_about_gap))
        await hub.publish(topic, {"type": "join", "name": name})
        try:
            async for message in ws.iter_json():  # bad JSON closes with 1007
                text = message.get("text") if isinstance(message, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise WebSocketClose(1003, 'expected {"text": "..."}')
                await hub.publish(topic, {"type": "message", "name": name, "text": text[:MAX_TEXT]})
        finally:
            # Runs even when the member's disconnect cancelled us: tell the room, shielded.
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await hub.publish(topic, {"type": "leave", "name": name})
