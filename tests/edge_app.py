"""The app tests/test_edge.py serves with ``trioweb run``, in a process of its own.

Every WebSocket connects with ``?tag=NAME``; the app records, per tag, the close code and
reason its handler saw (read in the handler's ``finally``) and the ones its ``after_websocket``
hook saw. ``GET /records?tags=a,b`` answers them as JSON once every tag's hook has run (or
after ``wait`` seconds, with what it has), so a test waits on the app's own event, not a sleep.

``app`` closes with the default close timeout; ``impatient`` is the same app with
a close timeout of 0.5 s, for clients that never answer the server's Close.
"""

from __future__ import annotations

import trio

from trioweb import App, HTMLResponse, Request, WebSocket

#: The small message limit of ``/limited`` and ``/plain``, in bytes.
LIMIT = 64 * 1024
#: How long ``/records`` waits for the hooks of the tags asked for, at most, in seconds.
RECORDS_WAIT = 5.0
#: The close timeout of ``impatient``, in seconds.
IMPATIENT_CLOSE_TIMEOUT = 0.5
#: What ``/closes`` closes with once it has had a message.
SERVER_CLOSE = (4000, "the server is done")

PAGE = "<!doctype html><meta charset='utf-8'><title>edge</title><p>edge tests</p>"


def make_app(**options: float) -> App:
    app = App(**options)
    records: dict[str, dict[str, list[object]]] = {}
    hooks_ran: dict[str, trio.Event] = {}

    def hook_ran(tag: str) -> trio.Event:
        return hooks_ran.setdefault(tag, trio.Event())

    def record(ws: WebSocket, who: str) -> None:
        tag = ws.query_params.get("tag") or ""
        records.setdefault(tag, {})[who] = [ws.close_code, ws.close_reason]

    async def echo(ws: WebSocket) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            record(ws, "handler")

    app.websocket("/echo")(echo)
    app.websocket("/limited", max_message_size=LIMIT)(echo)
    app.websocket("/plain", max_message_size=LIMIT, compression=None)(echo)

    @app.websocket("/closes")
    async def closes(ws: WebSocket) -> None:
        try:
            await ws.receive()
            await ws.close(*SERVER_CLOSE)
        finally:
            record(ws, "handler")

    @app.after_websocket
    async def after(ws: WebSocket) -> None:
        record(ws, "after")
        hook_ran(ws.query_params.get("tag") or "").set()

    @app.get("/records")
    async def read_records(request: Request) -> dict[str, object]:
        tags = [tag for tag in request.query_params.get("tags", "").split(",") if tag]
        with trio.move_on_after(float(request.query_params.get("wait") or RECORDS_WAIT)):
            for tag in tags:
                await hook_ran(tag).wait()
        return {tag: records.get(tag, {}) for tag in tags}

    @app.get("/")
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)  # a page of the server's own origin, for the browser

    return app


app = make_app()
impatient = make_app(close_timeout=IMPATIENT_CLOSE_TIMEOUT)
