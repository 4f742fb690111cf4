"""What the per-message performance work (one call per message in, sizes counted inline,
hypercorn's TCP read and send) must not have changed, over real servers and real clients."""

from __future__ import annotations

from typing import Any

import helpers
import trio
import trio.testing
import trio_websocket
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from trioweb import App, WebSocket, _hypercorn_tcp


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
        async with helpers.serving_asgi(zero_copy_receive(app)) as url:
            async with trio_websocket.open_websocket_url(url + "/echo") as client:
                await client.send_message(b"\x00\xffin")
                assert await client.get_message() == b"\x00\xffin"


class _Protocol:
    """hypercorn's protocol as the TCP server sees it: what it is told."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def handle(self, event: Any) -> None:
        self.events.append(type(event).__name__)


async def _meet_the_close(server: TCPServer) -> str:
    """A sender woken just as another task sends the connection's Closed event: what its
    send of a RawData did ("returned", or the name of what it raised)."""
    woken = trio.Event()
    outcome: list[str] = []

    async def sender() -> None:
        await woken.wait()
        try:
            await server.protocol_send(RawData(data=b"late"))
            outcome.append("returned")
        except Exception as exc:  # what the sender got, for the assertion
            outcome.append(type(exc).__name__)

    async def closer() -> None:
        woken.set()  # the sender is runnable as the close begins
        await server.protocol_send(Closed())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(closer)
    return outcome[0]


async def test_a_send_that_meets_the_close_of_its_connection_is_told_closed():
    # hypercorn's TCPServer closes a connection (a Closed event: an HTTP/2 GOAWAY, an HTTP/1
    # protocol error, the end of a WebSocket) in _close(), whose send_eof holds the socket's
    # send side across a checkpoint, outside the send lock. A sender woken just then (hypercorn's
    # HTTP/2 send task, an app's body) used to yield in the lock's acquire first, and then found
    # the socket closed: the protocol is told Closed and the send returns. Without that yield its
    # send_all meets send_eof's: it must not raise BusyResourceError, which escapes into the
    # sender (an app's ASGI send, or the connection's task and the ERROR log). The order of the
    # two tasks in trio's batch is random, so the meeting is repeated, over real TCP sockets.
    assert _hypercorn_tcp.install()
    listeners = await trio.open_tcp_listeners(0, host=helpers.HOST)
    port = listeners[0].socket.getsockname()[1]
    outcomes: list[str] = []
    with trio.fail_after(20):
        async with listeners[0]:
            for _ in range(40):
                client = await trio.open_tcp_stream(helpers.HOST, port)
                async with client, await listeners[0].accept() as server_side:
                    config, context = Config(), WorkerContext(None)
                    server = TCPServer(None, config, context, {}, server_side)  # type: ignore[arg-type]
                    protocol = server.protocol = _Protocol()  # type: ignore[assignment]
                    outcomes.append(await _meet_the_close(server))
                    assert "Closed" in protocol.events
    assert outcomes == ["returned"] * 40
