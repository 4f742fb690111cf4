import trio

from trioweb import App, WebSocket

app = App()


@app.websocket("/ticker/{symbol}")
async def ticker(ws: WebSocket, nursery: trio.Nursery, symbol: str) -> None:
    await ws.accept()

    async def prices() -> None:
        price = 100.0
        while True:
            await ws.send_json({"symbol": symbol, "price": round(price, 2)})
            price *= 1.01
            await trio.sleep(1)

    nursery.start_soon(prices)  # cancelled when the client leaves
    async for command in ws.iter_json():
        if command == {"action": "stop"}:
            # The loop ends, the handler returns, prices() is cancelled.
            await ws.close()
