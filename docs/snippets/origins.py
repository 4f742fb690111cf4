from trioweb import App, WebSocket

# Pages of these origins may open sockets; clients that are not browsers send no Origin.
app = App(allowed_origins=["https://chat.example.com", "https://*.chat.example.com"])


@app.websocket("/ws")
async def private(ws: WebSocket) -> None:
    async with ws:
        await ws.send(f"hello, page of {ws.headers.get('origin', 'no origin')}")


# Any page may connect here: so no cookies, nothing private.
@app.websocket("/public", allowed_origins=["*"])
async def public(ws: WebSocket) -> None:
    async with ws:
        await ws.send("hello, anyone")
