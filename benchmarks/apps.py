"""The four apps under test, each written the way its framework's docs would write it.

Every app serves the same two WebSocket routes:

- ``/echo``: send every message back, text as text, bytes as bytes;
- ``/fan``: subscribe the socket to one room; every message a socket sends is delivered to every
  socket in the room (the sender included), encoded once.

``load(name)`` imports only the framework asked for, so that a server process holds one
framework and its memory is measured alone.

A trioweb server's name may carry a permessage-deflate setting (``trioweb+takeover``, see
:data:`COMPRESSIONS`) and a tree (``trioweb@base``: trioweb imported from the directory in
``BENCH_TRIOWEB_TREE``, to compare two versions of trioweb in one run).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

#: Every server the harness knows, the reference first.
NAMES = ("bare", "trioweb", "starlette", "quart-trio")
#: Apps the harness serves for a comparison of its own, not among the frameworks compared:
#: ``typed`` is trioweb with typed messages against ``receive_json`` and checks by hand
#: (``benchmarks/typed.py``); ``bare-stream`` is the bare app on trioweb's WebSocket stream, to
#: tell the stream's own cost from the framework's.
EXTRA = ("typed", "bare-stream")
#: The ones that need more than trioweb's own dependencies.
OPTIONAL = {"starlette": "starlette", "quart-trio": "quart_trio"}


#: trioweb's permessage-deflate settings, by the name a server's name carries after ``+``.
COMPRESSIONS = ("off", "default", "takeover-12", "takeover")
#: The environment variable that points a ``trioweb@base`` process at its trioweb tree.
TREE_ENV = "BENCH_TRIOWEB_TREE"


def framework(name: str) -> str:
    """``trioweb`` for ``trioweb+takeover@base``: the framework a server name runs."""
    return name.split("@", 1)[0].split("+", 1)[0]


def compression(variant: str) -> Any:
    """The ``App(compression=...)`` value of a :data:`COMPRESSIONS` name."""
    from trioweb import Compression

    return {
        "off": None,
        "default": Compression(),
        "takeover-12": Compression(context_takeover=True, window_bits=12),
        "takeover": Compression(context_takeover=True),
    }[variant]


def load(name: str) -> ASGIApp:
    """The ASGI app called ``name``."""
    factories: dict[str, Callable[[], ASGIApp]] = {
        "bare": make_bare,
        "trioweb": make_trioweb,
        "starlette": make_starlette,
        "quart-trio": make_quart_trio,
    }
    if name == "typed":
        from .typed import make_app

        return make_app()
    if name == "bare-stream":
        return make_bare()
    variant = name.split("@", 1)[0].partition("+")[2]
    if variant:
        return make_trioweb(compression(variant))
    return factories[framework(name)]()


def prepare(name: str) -> None:
    """Change hypercorn as the framework's own server does before it serves, so that the
    framework runs here as it runs in production: ``trioweb.serve`` and ``trioweb run``
    install trioweb's WebSocket stream and its guards. (A current trioweb app also installs
    them at its lifespan startup; older trees, such as the base of an A/B run, did it only in
    ``serve()``, and would otherwise run on hypercorn's own stream here.)"""
    if framework(name) in ("trioweb", *EXTRA):
        from trioweb import _hypercorn_guard

        _hypercorn_guard.install()


def available(name: str) -> bool:
    """Whether ``name`` can be imported here (the optional peers may be missing)."""
    import importlib.util

    module = OPTIONAL.get(framework(name))
    return module is None or importlib.util.find_spec(module) is not None


# -- the floor: a bare ASGI app ------------------------------------------------------------


def make_bare() -> ASGIApp:
    """Plain ASGI: the least any framework can do on this server, and the reference."""
    subscribers: set[Any] = set()

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await lifespan(receive, send)
            return
        if kind != "websocket":
            raise ValueError(f"no {kind} here")
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        if scope["path"] == "/echo":
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                await send(
                    {"type": "websocket.send", "bytes": message["bytes"], "text": message["text"]}
                )
        else:  # /fan: a hand-written loop of sends, the message built once
            subscribers.add(send)
            try:
                while True:
                    message = await receive()
                    if message["type"] != "websocket.receive":
                        return
                    out = {
                        "type": "websocket.send",
                        "bytes": message["bytes"],
                        "text": message["text"],
                    }
                    for subscriber in list(subscribers):
                        await subscriber(out)
            finally:
                subscribers.discard(send)

    return app


# -- trioweb -------------------------------------------------------------------------------


def make_trioweb(*compression: Any) -> ASGIApp:
    """trioweb: ``async for`` echo, and the in-process hub with ``forward_to``; its default
    settings, or the ``compression`` given."""
    import trio

    from trioweb import App, WebSocket
    from trioweb.broadcast import Broadcast

    app = App(compression=compression[0]) if compression else App()
    hub = app.use(Broadcast())
    # BENCH_TRIOWEB_METRICS=1: Prometheus metrics on, to measure what they cost (a trioweb
    # from before them, as --base, runs without).
    if os.environ.get("BENCH_TRIOWEB_METRICS") and hasattr(app, "serve_metrics"):
        app.serve_metrics()

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)

    @app.websocket("/fan")
    async def fan(ws: WebSocket, nursery: trio.Nursery) -> None:
        async with ws, hub.subscribe("room") as subscription:
            nursery.start_soon(subscription.forward_to, ws)
            async for message in ws:
                await hub.publish("room", message)

    return app


# -- Starlette, on trio through anyio ------------------------------------------------------


def make_starlette() -> ASGIApp:
    """Starlette: ``WebSocketEndpoint``-free routes, a set of sockets for the room."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    room: set[WebSocket] = set()

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                else:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            pass

    async def fan(websocket: WebSocket) -> None:
        await websocket.accept()
        room.add(websocket)
        try:
            async for text in websocket.iter_text():
                for member in list(room):
                    try:
                        await member.send_text(text)
                    except (WebSocketDisconnect, RuntimeError):
                        room.discard(member)
        finally:
            room.discard(websocket)

    return Starlette(routes=[WebSocketRoute("/echo", echo), WebSocketRoute("/fan", fan)])


# -- quart-trio ----------------------------------------------------------------------------


def make_quart_trio() -> ASGIApp:
    """quart-trio: the ``websocket`` global, and one queue (a memory channel) per socket."""
    import trio
    from quart import websocket
    from quart_trio import QuartTrio

    app = QuartTrio(__name__)
    room: set[trio.MemorySendChannel[Any]] = set()

    @app.websocket("/echo")
    async def echo() -> None:
        while True:
            data = await websocket.receive()
            await websocket.send(data)

    @app.websocket("/fan")
    async def fan() -> None:
        await websocket.accept()
        outbox, inbox = trio.open_memory_channel[Any](256)

        async def forward() -> None:
            async for data in inbox:
                await websocket.send(data)

        room.add(outbox)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                while True:
                    data = await websocket.receive()
                    for member in list(room):
                        try:  # noqa: SIM105 (plain try is the cheaper one)
                            member.send_nowait(data)
                        except trio.WouldBlock:
                            pass  # too slow: this one misses the message
        finally:
            room.discard(outbox)

    return app
