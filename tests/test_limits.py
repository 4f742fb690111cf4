"""Security and limits: origins, message size, open sockets, idle sockets."""

import pytest
import trio
import trio.testing
from helpers import closed_with, serving
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from trioweb import App, CloseCode, WebSocket
from trioweb.testing import TestClient, WebSocketDenied


def echo_app(**options) -> App:
    app = App(**options)

    @app.websocket("/echo")
    async def echo(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    return app


async def denial(client, path: str, headers=None) -> WebSocketDenied:
    with pytest.raises(WebSocketDenied) as denied:
        async with client.websocket(path, headers=headers):
            pass
    return denied.value


# -- cross-site WebSocket hijacking ------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("http://testserver", True),  # same origin (the test client's Host is testserver)
        ("http://TestServer/", True),
        # A Host without a port says nothing of the scheme (TLS may end at a proxy): allowed.
        ("https://testserver", True),
        ("http://testserver:8080", False),  # another port
        ("http://evil.example", False),
        ("null", False),
        ("not a url", False),
    ],
)
async def test_by_default_only_same_origin_pages_may_connect(origin, allowed):
    app = echo_app()
    headers = {"origin": origin} if origin else None
    async with TestClient(app) as client:
        if allowed:
            async with client.websocket("/echo", headers=headers) as ws:
                await ws.send("hi")
                assert await ws.receive() == "hi"
        else:
            denied = await denial(client, "/echo", headers)
            assert denied.status_code == 403
            assert denied.body == f"origin not allowed: {origin}".encode()


async def test_allowed_origins_per_app_and_per_route():
    app = App(allowed_origins=["https://app.example.com", "https://*.partner.example"])

    @app.websocket("/app")
    async def app_default(ws: WebSocket):
        await ws.send("ok")

    @app.websocket("/public", allowed_origins=["*"])
    async def public(ws: WebSocket):
        await ws.send("ok")

    @app.websocket("/embedded", allowed_origins=["null"])
    async def embedded(ws: WebSocket):
        await ws.send("ok")

    async def opens(path: str, origin: str) -> bool:
        try:
            async with client.websocket(path, headers={"origin": origin}) as ws:
                assert await ws.receive() == "ok"
        except WebSocketDenied as denied:
            assert denied.status_code == 403
            return False
        return True

    async with TestClient(app) as client:
        assert await opens("/app", "https://app.example.com")
        assert await opens("/app", "https://a.partner.example")
        assert not await opens("/app", "http://testserver")  # a list replaces same-origin
        assert not await opens("/app", "https://evil.example")
        assert await opens("/public", "https://evil.example")
        assert await opens("/embedded", "null")
        assert not await opens("/embedded", "https://app.example.com")


def test_allowed_origins_must_be_a_list():
    with pytest.raises(TypeError, match="a list of origins"):
        App(allowed_origins="https://app.example.com")


# -- message size ------------------------------------------------------------------------


async def test_a_message_over_the_limit_closes_1009_with_a_reason():
    app = App(max_message_size=100)

    @app.websocket("/small")
    async def small(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    @app.websocket("/big", max_message_size=1000)
    async def big(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    async with TestClient(app) as client:
        async with client.websocket("/small") as ws:
            await ws.send(b"x" * 100)
            assert await ws.receive() == b"x" * 100
            await ws.send("é" * 51)  # 51 characters, 102 bytes of UTF-8
            closed = await closed_with(ws)
        assert closed.code is CloseCode.MESSAGE_TOO_BIG
        assert closed.reason == "message of 102 bytes over the limit of 100"
        async with client.websocket("/big") as ws:
            await ws.send("x" * 1000)
            assert await ws.receive() == "x" * 1000
            await ws.send(b"x" * 1001)
            assert (await closed_with(ws)).code == 1009


async def test_the_server_limit_follows_the_largest_route_over_a_real_socket():
    app = App()  # 1 MiB by default

    @app.websocket("/default")
    async def default(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    @app.websocket("/uploads", max_message_size=4 * 1024 * 1024)
    async def uploads(ws: WebSocket):
        async for message in ws:
            await ws.send(str(len(message)))

    two_mib = b"x" * (2 * 1024 * 1024)
    with trio.fail_after(20):
        async with serving(app) as server:
            base = server.url()
            async with open_websocket_url(base + "/uploads", max_message_size=2**23) as ws:
                await ws.send_message(two_mib)
                assert await ws.get_message() == str(len(two_mib))
            async with open_websocket_url(base + "/default") as ws:
                # The server closes as soon as the first 1 MiB is in: the close may reach the
                # client while it is still sending.
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.send_message(two_mib)
                    await ws.get_message()
            assert closed.value.reason.code == 1009
            assert "over the limit of 1048576" in closed.value.reason.reason


# -- open sockets ------------------------------------------------------------------------


async def test_handshakes_beyond_max_connections_get_503():
    app = App(max_connections=3)

    @app.websocket("/a", max_connections=2)
    async def a(ws: WebSocket):
        await ws.send("in")
        await ws.receive()

    @app.websocket("/b")
    async def b(ws: WebSocket):
        await ws.send("in")
        await ws.receive()

    async with TestClient(app) as client:
        async with client.websocket("/a") as first, client.websocket("/a") as second:
            assert await first.receive() == await second.receive() == "in"
            denied = await denial(client, "/a")  # the route's limit
            assert (denied.status_code, denied.body) == (
                503,
                b"too many connections, try again later",
            )
            async with client.websocket("/b") as third:
                assert await third.receive() == "in"
                assert (await denial(client, "/b")).status_code == 503  # the app's limit
        # Room again once they have left.
        async with client.websocket("/a") as again:
            assert await again.receive() == "in"


# -- idle sockets ------------------------------------------------------------------------


async def test_idle_sockets_are_closed_1000_and_active_ones_stay(autojump_clock):
    app = App(idle_timeout=30)

    @app.websocket("/chat")
    async def chat(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    @app.websocket("/patient", idle_timeout=300)
    async def patient(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    async with TestClient(app, receive_timeout=1000) as client:
        async with client.websocket("/chat") as active, client.websocket("/chat") as idle:

            async def keep_talking():
                for _ in range(5):  # one message every 20 s keeps this one alive
                    await trio.sleep(20)
                    await active.send("still here")
                    assert await active.receive() == "still here"

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_talking)
                closed = await closed_with(idle)
                assert trio.current_time() - start == pytest.approx(30)
            assert (closed.code, closed.reason) == (CloseCode.NORMAL, "idle for more than 30 s")
            assert trio.current_time() - start == pytest.approx(100)  # still open at the end
        async with client.websocket("/patient") as ws:
            start = trio.current_time()
            assert (await closed_with(ws)).code == CloseCode.NORMAL
            assert trio.current_time() - start == pytest.approx(300)


@pytest.mark.parametrize(
    "options",
    [
        {"inbox_size": 0},
        {"max_message_size": 0},
        {"max_connections": 0},
        {"idle_timeout": 0},
    ],
)
def test_limits_must_make_sense(options):
    with pytest.raises(ValueError):
        App(**options)
    with pytest.raises(ValueError):
        App().websocket("/x", **options)


async def test_a_rejected_origin_over_a_real_socket():
    app = echo_app()
    with trio.fail_after(20):
        async with serving(app) as server:
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(
                    server.url("/echo"), extra_headers=[(b"Origin", b"https://evil.example")]
                ):
                    pass
            assert rejected.value.status_code == 403
