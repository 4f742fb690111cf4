"""hypercorn's TCP server with trioweb's read and send (``trioweb/_hypercorn_tcp.py``), over real
sockets: what hypercorn's own methods guaranteed still holds."""

from __future__ import annotations

import helpers
import pytest
import trio
import wsproto
import wsproto.events as we
from hypercorn.trio.tcp_server import TCPServer

from trioweb import App, WebSocket, _hypercorn_guard, _hypercorn_tcp


async def open_client(port: int, path: str) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    """A raw wsproto client, handshake done."""
    stream = await trio.open_tcp_stream(helpers.HOST, port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(client.send(we.Request(host=helpers.HOST, target=path)))
    while True:
        client.receive_data(await stream.receive_some())
        for event in client.events():
            if isinstance(event, we.AcceptConnection):
                return stream, client
            raise AssertionError(f"not accepted: {event!r}")


async def next_message(stream: trio.SocketStream, client: wsproto.WSConnection) -> str | None:
    """The next whole text message, or None once the server closed."""
    parts: list[str] = []
    while True:
        for event in client.events():
            if isinstance(event, we.TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, we.CloseConnection):
                return None
        data = await stream.receive_some()
        if not data:
            return None
        client.receive_data(data)


def test_serve_installs_it():
    _hypercorn_guard.install()
    assert _hypercorn_tcp.install() is True
    assert getattr(TCPServer.protocol_send, "__trioweb_tcp__", False)
    assert TCPServer._read_data is _hypercorn_tcp._read_data


async def test_a_read_timeout_still_drops_a_silent_peer():
    # With read_timeout set, the read is wrapped as hypercorn wraps it: a WebSocket whose peer
    # sends nothing is closed after that long (and not before), its handler cancelled.
    app = App()
    ended = trio.Event()

    @app.websocket("/quiet")
    async def quiet(ws: WebSocket) -> None:
        try:
            await ws.accept()
            await trio.sleep_forever()
        finally:
            ended.set()

    with trio.fail_after(15):
        async with helpers.serving(app, ping_interval=None, read_timeout=1) as server:
            stream, _ = await open_client(server.port, "/quiet")
            opened = trio.current_time()
            async with stream:
                while await stream.receive_some():
                    pass
                assert trio.current_time() - opened >= 0.9
            await ended.wait()


async def test_writes_from_two_tasks_go_out_whole_one_at_a_time():
    # The handler's sends block on a client that does not read yet; the client then sends
    # Pings, whose Pongs hypercorn's read task must send on the same connection: they wait for
    # the send lock (the contended path) and every frame still arrives whole, the handler's
    # messages in order, and a Pong for every Ping.
    app = App()
    size, count, pings = 256 * 1024, 12, 5

    @app.websocket("/burst")
    async def burst(ws: WebSocket) -> None:
        await ws.accept()
        for i in range(count):
            await ws.send(f"{i:02d}" + "x" * size)
        await ws.receive()

    with trio.fail_after(30):
        async with helpers.serving(app, ping_interval=None) as server:
            stream, client = await open_client(server.port, "/burst")
            async with stream:
                await trio.testing.wait_all_tasks_blocked()  # the handler's send is stalled
                for i in range(pings):
                    await stream.send_all(client.send(we.Ping(payload=b"%d" % i)))
                await trio.testing.wait_all_tasks_blocked()  # the Pongs wait for the lock
                received, pongs = [], []
                parts: list[str] = []
                while len(received) < count or len(pongs) < pings:
                    data = await stream.receive_some()
                    assert data, "the server closed early"
                    client.receive_data(data)
                    for event in client.events():
                        if isinstance(event, we.Pong):
                            pongs.append(bytes(event.payload))
                        elif isinstance(event, we.TextMessage):
                            parts.append(event.data)
                            if event.message_finished:
                                received.append("".join(parts))
                                parts = []
                        else:
                            raise AssertionError(f"unexpected {event!r}")
                assert [m[:2] for m in received] == [f"{i:02d}" for i in range(count)]
                assert all(m[2:] == "x" * size for m in received)
                assert pongs == [b"%d" % i for i in range(pings)]
                await stream.send_all(client.send(we.TextMessage(data="done")))


async def test_a_cancelled_sender_sends_nothing():
    # hypercorn's send checked for cancellation before the bytes went out (its lock's acquire
    # did); the replacement still does: a raw ASGI app whose send runs in a cancelled scope gets
    # Cancelled, and the client never sees that message.
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":  # (returning here would stop hypercorn's worker)
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "websocket.accept"})
        with trio.CancelScope() as cancelled:
            cancelled.cancel()
            with pytest.raises(trio.Cancelled):
                await send({"type": "websocket.send", "text": "never"})
        await send({"type": "websocket.send", "text": "after"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    with trio.fail_after(15):
        async with helpers.serving_asgi(app) as url:
            stream, client = await open_client(int(url.rsplit(":", 1)[1]), "/")
            async with stream:
                assert await next_message(stream, client) == "after"
                await stream.send_all(client.send(we.CloseConnection(code=1000)))
