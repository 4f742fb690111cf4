from trioweb import App, WebSocket

app = App()


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    async with ws:  # accept the handshake; close with 1000 when the block ends
        async for message in ws:  # str or bytes; the loop ends when the socket closes
            await ws.send(message)
