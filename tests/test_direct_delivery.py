"""The direct way in over a real server: trioweb's stream hands each message to the connection
and tells it the end, with no reader task; an app whose receive() a middleware wraps gets the
reader task instead, and every guarantee holds both ways (docs/performance.md, "One task per
socket").

Each test runs both ways: ``direct`` is the app as served; ``reader`` puts an ASGI middleware
in front that wraps receive(), which must see every message, so the connection falls back to
its reader task.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import helpers
import pytest
import trio
import trio_websocket
from hypercorn.config import Config
from hypercorn.protocol.events import Request, StreamClosed
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from trio.lowlevel import current_task
from trio_websocket import ConnectionClosed

from trioweb import App, WebSocket
from trioweb._types import DIRECT_DELIVERY
from trioweb._ws_stream import WebSocketStream

WAYS = ["direct", "reader"]


def tagging_receive(inner: Any) -> Any:
    """An ASGI middleware that wraps receive() and appends "!" to every text message."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        async def wrapped() -> Any:
            message = await receive()
            if message["type"] == "websocket.receive" and message.get("text") is not None:
                message = {**message, "text": message["text"] + "!"}
            return message

        await inner(scope, wrapped, send)

    return asgi


def serving(app: App, way: str) -> AbstractAsyncContextManager[str]:
    """``app`` on hypercorn's trio worker with trioweb's stream, as it is (``direct``) or behind
    a middleware that wraps receive(); yields its ws:// base URL."""
    return helpers.serving_asgi(app if way == "direct" else tagging_receive(app))


@pytest.mark.parametrize("way", WAYS)
async def test_messages_reach_the_handler_with_a_task_beside_it_only_behind_a_middleware(way):
    app = App()
    nurseries: list[int] = []

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        # The handler's own task: a nursery around it only if a reader task runs beside it.
        nurseries.append(len(current_task().child_nurseries))
        async for message in ws:
            await ws.send(message)

    async with serving(app, way) as url:
        async with trio_websocket.open_websocket_url(url + "/echo") as ws:
            for n in range(50):
                await ws.send_message(str(n))
            received = [await ws.get_message() for _ in range(50)]
    suffix = "" if way == "direct" else "!"  # the middleware saw every message
    assert received == [f"{n}{suffix}" for n in range(50)]
    assert nurseries == [0 if way == "direct" else 1]


@pytest.mark.parametrize("way", WAYS)
async def test_a_handler_that_never_reads_is_cancelled_with_the_client_s_code(way):
    app = App()
    ended = trio.Event()
    seen: list[Any] = []

    @app.websocket("/deaf")
    async def deaf(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await trio.sleep_forever()
        finally:
            seen.append("cancelled")

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        seen.append((ws.close_code, ws.close_reason))
        ended.set()

    async with serving(app, way) as url:
        async with trio_websocket.open_websocket_url(url + "/deaf") as ws:
            await ws.send_message("unread")
            await ws.aclose(4001, "bye")
        with trio.fail_after(5):
            await ended.wait()
    assert seen == ["cancelled", (4001, "bye")]


@pytest.mark.parametrize("way", WAYS)
async def test_the_idle_timeout_closes_a_silent_socket_and_spares_a_talking_one(way):
    app = App(idle_timeout=0.5)

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    async with serving(app, way) as url:
        async with (
            trio_websocket.open_websocket_url(url + "/echo") as talking,
            trio_websocket.open_websocket_url(url + "/echo") as silent,
        ):

            async def talk() -> None:
                # A message every 0.2 s for 1.2 s: past two idle timeouts.
                for _ in range(6):
                    await talking.send_message("still here")
                    assert (await talking.get_message()).startswith("still here")
                    await trio.sleep(0.2)  # the pace of its messages, not a wait for anything

            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk)
                start = trio.current_time()
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await silent.get_message()
                waited = trio.current_time() - start
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (
        1000,
        "idle for more than 0.5 s",
    )
    assert 0.45 <= waited < 3


@pytest.mark.parametrize("way", WAYS)
async def test_messages_after_the_app_s_close_are_dropped_and_the_socket_ends(way):
    # The client floods while the app closes: nothing may wait for a reader that is gone.
    app = App()
    ended = trio.Event()

    @app.websocket("/short")
    async def short(ws: WebSocket) -> None:
        await ws.accept()
        assert await ws.receive() == ("first" if way == "direct" else "first!")
        await ws.close(4000, "enough")

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        ended.set()

    async with serving(app, way) as url:
        async with trio_websocket.open_websocket_url(url + "/short") as ws:
            await ws.send_message("first")
            with pytest.raises(ConnectionClosed) as closed:
                for n in range(2000):
                    await ws.send_message(f"more {n}")
                await ws.get_message()
        with trio.fail_after(5):
            await ended.wait()
        # And the server still serves.
        async with trio_websocket.open_websocket_url(url + "/short") as ws:
            await ws.send_message("first")
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    assert closed.value.reason.code == 4000


class _Peer:
    """Stands for a connection: records what the stream hands it."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.ends: list[tuple[int, str, bool]] = []

    def deliver(self, data: str | bytes) -> bool:
        self.messages.append(data)
        return True

    def disconnected(self, code: int, reason: str, closed_by_server: bool) -> None:
        self.ends.append((code, reason, closed_by_server))


async def test_a_client_gone_before_the_app_attaches_is_told_through_receive():
    # The stream tells the end through the ASGI queue if the app has not taken the direct way
    # in yet; the app's later attach is then refused, so that it reads the end from receive().
    told: list[Any] = []
    attached: list[bool] = []
    client_gone = trio.Event()

    async def app(scope: Any, receive: Any, send: Any, *spawners: Any) -> None:
        direct = scope["extensions"][DIRECT_DELIVERY]
        assert direct["receive"] is receive
        await client_gone.wait()  # the app is slow to attach: the client is gone by then
        # (and the stream has dropped its offer from the scope: nothing leads back to it)
        assert DIRECT_DELIVERY not in scope["extensions"]
        attached.append(direct["attach"](_Peer()))
        told.append(await receive())
        told.append(await receive())

    async def protocol_send(event: Any) -> None:
        if isinstance(event, StreamClosed):
            await stream.handle(StreamClosed(stream_id=1))

    async with TaskGroup() as task_group:
        stream = WebSocketStream(
            app,
            Config(),
            WorkerContext(None),
            task_group,
            False,
            ("127.0.0.1", 5000),
            ("127.0.0.1", 8000),
            protocol_send,
            1,
        )
        headers = [
            (b"host", b"example.com"),
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"sec-websocket-version", b"13"),
        ]
        request = Request(
            stream_id=1, headers=headers, http_version="1.1", method="GET", raw_path=b"/", state={}
        )
        await stream.handle(request)  # the app is spawned
        await stream.handle(StreamClosed(stream_id=1))
        client_gone.set()
    assert attached == [False]
    assert [m["type"] for m in told] == ["websocket.connect", "websocket.disconnect"]
    assert told[1]["code"] == 1006  # no Close frame: the connection was lost
