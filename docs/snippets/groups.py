import trio

from trioweb import App, WebSocket

app = App()
PRICES = {"ACME": 12.5, "INITECH": 3.25}


async def quote(symbol: str) -> float:  # stands for a call to an upstream service
    await trio.sleep(0.01)
    return PRICES[symbol]  # KeyError for an unknown symbol


async def quote_all(symbols: list[str]) -> dict[str, float]:
    found: dict[str, float] = {}

    async def fetch(symbol: str) -> None:
        found[symbol] = await quote(symbol)

    async with trio.open_nursery() as nursery:  # every quote at once
        for symbol in symbols:
            nursery.start_soon(fetch, symbol)
    return found


@app.websocket("/quotes")
async def quotes(ws: WebSocket) -> None:
    async with ws:
        async for symbols in ws.iter_json():
            try:
                found = await quote_all(symbols)
            except* (
                KeyError
            ) as group:  # the nursery wrapped the KeyError in an ExceptionGroup
                unknown = sorted(str(error.args[0]) for error in group.exceptions)
                await ws.send_json({"error": "unknown symbol", "symbols": unknown})
            else:
                await ws.send_json(found)
