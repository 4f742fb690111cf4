import logging

from trioweb import App, WebSocket, abort

# A page cannot read the status of a refused handshake: tell it with a close code.
app = App(browser_denials="close")
log = logging.getLogger("myapp")
TOKENS = {"t0k-alice": "alice"}


@app.before_websocket
async def authenticate(ws: WebSocket) -> None:
    user = TOKENS.get(ws.query_params.get("token", ""))
    if user is None:
        abort(
            401, "log in first"
        )  # a browser: close 4401 "log in first"; others: HTTP 401
    ws.state.user = user


@app.after_websocket
async def record(ws: WebSocket) -> None:
    if ws.denial_status is not None:  # refused, whichever way the client was told
        log.info("refused %s with %d", ws.path, ws.denial_status)


@app.websocket("/feed")
async def feed(ws: WebSocket) -> None:
    async with ws:
        await ws.send_json({"hello": ws.state.user})


# A route for scripts and services, which read statuses: HTTP for everyone.
@app.websocket("/internal", browser_denials="http")
async def internal(ws: WebSocket) -> None:
    abort(403, "not from a browser")
