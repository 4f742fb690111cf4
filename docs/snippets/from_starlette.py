from trioweb import App, WebSocket

app = App()


@app.websocket("/chat/{room}")
async def chat(ws: WebSocket, room: str) -> None:
    await ws.accept()
    try:
        async for data in ws.iter_json():  # ends when the socket closes
            await ws.send_json({"room": room, "echo": data})
    finally:
        ...  # cleanup here: it runs however the connection ends
