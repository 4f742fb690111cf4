"""The apps of tests/test_metrics.py; ``app`` is served by `trioweb run --workers 2 --metrics`."""

import os

import trio

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast


def make_app() -> tuple[App, Broadcast]:
    """A fresh app (its own metrics registry), and its in-process hub, whose subscriptions
    hold one message."""
    app = App()
    hub = app.use(Broadcast(max_buffer=1))

    @app.websocket("/ws/{room}")
    async def echo(ws: WebSocket, room: str) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    @app.websocket("/whoami")
    async def whoami(ws: WebSocket) -> None:
        """Says which worker serves it, then echoes."""
        await ws.accept()
        await ws.send(str(os.getpid()))
        async for message in ws:
            await ws.send(message)

    @app.websocket("/boom")
    async def boom(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive()
        raise RuntimeError("boom")

    @app.websocket("/private")
    async def private(ws: WebSocket) -> None:
        await ws.reject(403)

    @app.websocket("/limited", max_connections=1)
    async def limited(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive()

    @app.websocket("/deaf", inbox_size=2)
    async def deaf(ws: WebSocket) -> None:
        """Never reads: its inbox overflows (1008)."""
        await ws.accept()
        await trio.sleep_forever()

    @app.websocket("/subscribe/{policy}")
    async def subscribe(ws: WebSocket, policy: str) -> None:
        """Subscribes to "news" without reading it; ends when the client sends something."""
        async with hub.subscribe("news", on_overflow=policy):  # type: ignore[arg-type]
            await ws.accept()
            await ws.send("subscribed")
            await ws.receive()

    return app, hub


app, hub = make_app()
