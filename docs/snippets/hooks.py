import logging

from trioweb import App, PlainTextResponse, WebSocket, abort

log = logging.getLogger("chat")
app = App()


class Banned(Exception):
    pass


@app.before_websocket
async def require_token(ws: WebSocket) -> None:
    if ws.query_params.get("token") != "s3cret":
        abort(401, "missing or bad token")  # a real HTTP 401, not a bare close


@app.after_websocket
async def log_close(ws: WebSocket) -> None:
    log.info("%s closed with %s", ws.path, ws.close_code)


@app.errorhandler(Banned)
async def banned(ws: WebSocket, exc: Banned) -> PlainTextResponse:
    # The denial, if the handshake is not accepted yet:
    return PlainTextResponse(f"banned from {exc}", 403)


@app.websocket("/rooms/{room}")
async def room(ws: WebSocket, room: str) -> None:
    if room == "staff":
        raise Banned(room)
    async with ws:
        await ws.send(f"welcome to {room}")
