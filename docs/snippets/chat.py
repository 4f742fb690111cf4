import os
from functools import partial

import trio

from trioweb import App, CloseCode, WebSocket, WebSocketClose
from trioweb.broadcast import Broadcast, Gap

app = App(max_message_size=4096)  # a bigger message closes the socket with 1009
# --8<-- [start:hub]
# No URL: rooms live in this process.
# A redis:// URL: rooms shared by every process and host.
hub = app.use(Broadcast(os.environ.get("CHAT_BROKER_URL"), max_buffer=100))
# --8<-- [end:hub]


@app.websocket("/chat/{room}")
async def chat(ws: WebSocket, nursery: trio.Nursery, room: str) -> None:
    name = ws.query_params.get("name", "").strip()[:40] or "anonymous"
    topic = f"chat:{room}"
    async with ws, hub.subscribe(topic) as subscription:

        async def resync(gap: Gap) -> None:  # the broker lost messages: tell the client
            await ws.send_json({"type": "gap", "reason": gap.reason})

        # A member more than 100 messages behind is closed with 1013; the others go on.
        nursery.start_soon(partial(subscription.forward_to, ws, on_gap=resync))
        await hub.publish(topic, {"type": "join", "name": name})
        try:
            async for message in ws.iter_json():  # invalid JSON closes with 1007
                text = message.get("text") if isinstance(message, dict) else None
                if not isinstance(text, str):
                    raise WebSocketClose(
                        CloseCode.UNSUPPORTED_DATA, 'expected {"text": "..."}'
                    )
                await hub.publish(
                    topic, {"type": "message", "name": name, "text": text}
                )
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await hub.publish(topic, {"type": "leave", "name": name})
