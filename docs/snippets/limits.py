from trioweb import App, WebSocket

app = App(
    max_message_size=64 * 1024,  # bytes in one message; over it: close 1009
    inbox_size=32,  # messages received but not read yet; over it: close 1008
    max_connections=10_000,  # open sockets in this process; beyond it: HTTP 503
    idle_timeout=300,  # seconds without a message from the client; then: close 1000
)


@app.websocket("/chat")
async def chat(ws: WebSocket) -> None:
    async with ws:
        async for message in ws:
            await ws.send(message)


@app.websocket("/upload", max_message_size=8 * 1024 * 1024, max_connections=10)
async def upload(ws: WebSocket) -> None:  # this route's own limits
    async with ws:
        async for chunk in ws.iter_bytes():
            await ws.send_json({"received": len(chunk)})
