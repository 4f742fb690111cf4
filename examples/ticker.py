"""Ticker: a producer task and a consumer task in the connection's nursery.

    trioweb run examples.ticker:app

Connect to ws://127.0.0.1:8000/ticker/ACME; send {"interval": 0.5} to change the pace. The
handler starts both tasks and returns; when the client leaves, both are cancelled with the
connection: nothing leaks, nothing has to be remembered.
"""

import trio

from trioweb import App, WebSocket, WebSocketClose

app = App()
#: Producers running right now (the test checks that a client leaving stops its producer).
running_producers = 0


@app.websocket("/ticker/{symbol}")
async def ticker(ws: WebSocket, nursery: trio.Nursery, symbol: str) -> None:
    await ws.accept()
    pace = {"interval": 0.05}

    async def produce() -> None:
        global running_producers
        running_producers += 1
        try:
            n = 0
            while True:
                n += 1
                await ws.send_json({"symbol": symbol, "n": n})
                await trio.sleep(pace["interval"])
        finally:
            running_producers -= 1

    async def consume() -> None:
        async for command in ws.iter_json():  # bad JSON closes with 1007
            interval = command.get("interval") if isinstance(command, dict) else None
            if not isinstance(interval, (int, float)) or isinstance(interval, bool):
                raise WebSocketClose(1008, 'expected {"interval": seconds}')
            pace["interval"] = max(0.01, float(interval))

    nursery.start_soon(produce)
    nursery.start_soon(consume)
