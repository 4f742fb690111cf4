from collections import deque
from pathlib import Path
from typing import Any

import trio

from trioweb import App, FileResponse, Request, WebSocket, abort

app = App(browser_denials="close")  # denials a page can read: 4401, 4403...
app.serve_client()  # the browser client, at /trioweb.js


class Feed:
    """Messages with offsets, the last thousand kept for pages that come back."""

    def __init__(self) -> None:
        self.last = 0  # the offset of the newest message
        self.kept: deque[dict[str, Any]] = deque(maxlen=1000)
        self.changed = trio.Event()

    def publish(self, message: dict[str, Any]) -> None:
        self.last += 1
        self.kept.append({"offset": str(self.last), **message})
        self.changed.set()
        self.changed = trio.Event()

    def after(self, offset: int) -> list[dict[str, Any]] | None:
        """Every message after `offset`; None if some are no longer kept."""
        oldest = self.last - len(self.kept) + 1
        if not oldest - 1 <= offset <= self.last:
            return None
        return [m for m in self.kept if int(m["offset"]) > offset]


feed = Feed()


@app.get("/")
async def page(request: Request) -> FileResponse:
    return FileResponse(Path(__file__).with_name("client_page.html"))


@app.websocket("/feed")
async def follow(ws: WebSocket) -> None:
    if ws.query_params.get("token") != "let-me-in":  # stands for a real check
        abort(401, "log in first")
    since = ws.query_params.get("since", "")  # the client adds it when it comes back
    missed = feed.after(int(since)) if since.isdigit() else None
    welcome = {"type": "welcome", "recovered": missed is not None}
    if missed is None:  # a new page, or gone too long: it gets the recent ones
        welcome["recent"] = list(feed.kept)[-20:]
    seen = int(since) if missed is not None else feed.last
    async with ws, trio.open_nursery() as nursery:
        await ws.send_json(welcome)

        async def forward() -> None:
            nonlocal seen
            while True:
                changed = feed.changed
                new = feed.after(seen)
                if new is None:  # so far behind that messages were lost
                    await ws.close(1013, "too slow")  # the client comes back: a reset
                    return
                for message in new:
                    await ws.send_json(message)
                    seen = int(message["offset"])
                await changed.wait()

        nursery.start_soon(forward)
        async for message in ws.iter_json():
            if message.get("type") == "ping":  # the client's heartbeat
                await ws.send_json({"type": "pong"})
            elif message.get("type") == "say":
                feed.publish({"type": "said", "text": str(message.get("text", ""))})
        nursery.cancel_scope.cancel()
