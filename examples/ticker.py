"""Ticker: a producer task in the connection's nursery, and commands from the client.

    trioweb run examples.ticker:app

Connect to ws://127.0.0.1:8000/ticker/ACME; send {"interval": 0.5} to change the pace.
When the client leaves, the producer is cancelled with the handler: nothing leaks.
"""

import trio

from trioweb import App, WebSocket, WebSocketClose

app = App()


@app.websocket("/ticker/{symbol}")
async def ticker(ws: WebSocket, nursery: trio.Nursery, symbol: str) -> None:
    await ws.accept()
    interval = 0.05

    async def prices() -> None:
        n = 0
        while True:
            n += 1
            await ws.send_json({"symbol": symbol, "n": n})
            await trio.sleep(interval)

    nursery.start_soon(prices)  # cancelled when the client disconnects
    async for command in ws.iter_json():
        if not isinstance(command, dict) or not isinstance(command.get("interval"), (int, float)):
            raise WebSocketClose(1008, 'expected {"interval": seconds}')
        interval = max(0.01, float(command["interval"]))
