"""What the per-message performance work (one call per message in, sizes counted inline,
hypercorn's TCP read and send) must not have changed, over real servers and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import helpers
import hypercorn.trio
import trio
import trio_websocket
from hypercorn.config import Config

from trioweb import App, WebSocket
from trioweb._hypercorn_guard import install


async def test_send_bytes_takes_a_memoryview_and_counts_its_size():
    # send_bytes() passed any bytes-like object through, and the count of bytes out took its
    # len(); counting sizes inline must not turn a memoryview into an AttributeError raised
    # after the message went out (the handler would end with 1011).
    app = App()
    outcome: list[Any] = []

    @app.websocket("/view")
    async def view(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.send_bytes(memoryview(b"\x00\xffview"))  # type: ignore[arg-type]
            await ws.send_bytes(bytearray(b"\x80array"))  # type: ignore[arg-type]
            await ws.send("after")
        except Exception as exc:  # what the handler got, for the assertion below
            outcome.append(exc)
            raise
        await ws.receive()

    with trio.fail_after(10):
        async with helpers.serving(app, ping_interval=None) as server:
            async with trio_websocket.open_websocket_url(server.url("/view")) as client:
                received = [await client.get_message() for _ in range(3)]
                await client.send_message("done")
    assert outcome == []
    assert received == [b"\x00\xffview", b"\x80array", "after"]


def zero_copy_receive(inner: Any) -> Any:
    """An ASGI middleware that wraps receive() and hands binary messages on as memoryviews."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        async def wrapped() -> Any:
            message = await receive()
            if message["type"] == "websocket.receive" and message.get("bytes") is not None:
                message = {**message, "bytes": memoryview(message["bytes"])}
            return message

        await inner(scope, wrapped, send)

    return asgi


@asynccontextmanager
async def behind_middleware(app: App) -> AsyncIterator[str]:
    """``app`` behind :func:`zero_copy_receive` on hypercorn's trio worker with trioweb's
    stream; yields its ws:// base URL. (The middleware wraps receive(), so the connection
    reads through its reader task.)"""
    install()
    config = Config()
    config.bind = [f"{helpers.HOST}:0"]
    config.accesslog = config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(
                hypercorn.trio.serve, zero_copy_receive(app), config, shutdown_trigger=stop.wait
            )
        )
        try:
            yield "ws://" + binds[0].split("://", 1)[1]
        finally:
            stop.set()


async def test_the_reader_takes_a_memoryview_a_middleware_hands_on():
    # The reader task now enters every message through Connection.deliver, whose size is
    # counted inline: a bytes-like message from a middleware still reaches the handler.
    app = App()

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(bytes(message))

    with trio.fail_after(10):
        async with behind_middleware(app) as url:
            async with trio_websocket.open_websocket_url(url + "/echo") as client:
                await client.send_message(b"\x00\xffin")
                assert await client.get_message() == b"\x00\xffin"
