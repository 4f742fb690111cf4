import trio

from trioweb import App, WebSocket, WebSocketClose, abort

app = App()


# The handler finishes after accept: 1000
@app.websocket("/done")
async def done(ws: WebSocket) -> None:
    await ws.accept()


# An unhandled exception after accept: 1011, and a log line
@app.websocket("/bug")
async def bug(ws: WebSocket) -> None:
    await ws.accept()
    raise RuntimeError("a bug")


# The same before accept: HTTP 500
@app.websocket("/early-bug")
async def early_bug(ws: WebSocket) -> None:
    raise RuntimeError("a bug")


# abort() before accept: that HTTP status and body
@app.websocket("/early-abort")
async def early_abort(ws: WebSocket) -> None:
    abort(401, "log in first")


# abort() after accept: 1008, the detail as the reason
@app.websocket("/late-abort")
async def late_abort(ws: WebSocket) -> None:
    await ws.accept()
    abort(403, "not yours")


# close() (or returning) before accept: HTTP 403
@app.websocket("/refuse")
async def refuse(ws: WebSocket) -> None:
    await ws.close()


# WebSocketClose after accept, from any task: its code and reason
@app.websocket("/game")
async def game(ws: WebSocket, nursery: trio.Nursery) -> None:
    await ws.accept()

    async def referee() -> None:
        raise WebSocketClose(4000, "game over")

    nursery.start_soon(referee)
    await trio.sleep_forever()


# Invalid JSON, not caught: 1007
@app.websocket("/json")
async def json_only(ws: WebSocket) -> None:
    await ws.receive_json()


# Text where bytes were asked for, not caught: 1003
@app.websocket("/binary")
async def binary_only(ws: WebSocket) -> None:
    await ws.receive_bytes()


# More than 4 messages waiting unread: 1008
@app.websocket("/slow", inbox_size=4)
async def slow(ws: WebSocket) -> None:
    await ws.accept()
    await trio.sleep_forever()
