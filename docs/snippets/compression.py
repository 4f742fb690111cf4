from trioweb import App, Compression, WebSocket

app = App(compression=Compression())  # the default: each message deflated on its own


@app.websocket(
    "/prices", compression=Compression(context_takeover=True, window_bits=12)
)
async def prices(
    ws: WebSocket,
) -> None:  # a stream of similar JSON updates: better ratios
    async with ws:
        async for message in ws:
            await ws.send(message)


@app.websocket("/photos", compression=None)
async def photos(ws: WebSocket) -> None:  # JPEGs do not shrink: spare the CPU
    async with ws:
        async for image in ws.iter_bytes():
            await ws.send_json({"received": len(image)})
