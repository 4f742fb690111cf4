"""The test client itself: timeouts, denials, cleanup, and the pytest plugin's fixture."""

import pytest
import trio

from trioweb import App, WebSocket
from trioweb.testing import TestClient, WebSocketClosed, WebSocketDenied


@pytest.fixture
def app():
    app = App()

    @app.websocket("/echo")
    async def echo(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    @app.websocket("/silent")
    async def silent(ws: WebSocket):
        await ws.accept()
        await trio.sleep_forever()

    @app.websocket("/stubborn")
    async def stubborn(ws: WebSocket):
        await ws.accept()
        with trio.CancelScope(shield=True):
            await trio.sleep(3600)

    @app.get("/")
    async def index(request):
        return "index"

    return app


async def test_the_plugin_provides_a_client_for_the_app_fixture(client):
    assert isinstance(client, TestClient)
    assert (await client.get("/")).text == "index"
    async with client.websocket("/echo") as ws:
        await ws.send("via fixture")
        assert await ws.receive() == "via fixture"


async def test_receive_fails_with_a_clear_message_instead_of_hanging(app, autojump_clock):
    async with TestClient(app, receive_timeout=3) as client, client.websocket("/silent") as ws:
        with pytest.raises(TimeoutError, match=r"no message from the app within 3 s"):
            await ws.receive()


async def test_leaving_waits_for_the_handler_but_not_forever(app, autojump_clock):
    async with TestClient(app, receive_timeout=3) as client:
        with pytest.raises(TimeoutError, match="did not finish within 3 s"):
            async with client.websocket("/stubborn"):
                pass


async def test_query_string_and_headers_reach_the_app():
    app = App()

    @app.websocket("/q")
    async def q(ws: WebSocket):
        await ws.send(f"{ws.query_params['x']} {ws.headers['x-h']}")

    async with TestClient(app) as client, client.websocket("/q?x=1", headers={"X-H": "2"}) as ws:
        assert await ws.receive() == "1 2"


async def test_denial_has_status_headers_and_body():
    app = App()

    @app.websocket("/no")
    async def no(ws: WebSocket):
        await ws.reject(429, b"slow down", headers={"retry-after": "5"})

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/no"):
                pass
    assert denied.value.status_code == 429
    assert denied.value.headers["retry-after"] == "5"
    assert denied.value.body == b"slow down"


async def test_paths_must_be_absolute():
    async with TestClient(App()) as client:
        with pytest.raises(ValueError, match="start with '/'"):
            await client.get("relative")
        with pytest.raises(ValueError, match="start with '/'"):
            async with client.websocket("ws"):
                pass


async def test_the_test_client_rejects_asgi_protocol_errors_as_hypercorn_does():
    errors = []

    async def raw_app(scope, receive, send):
        # Not a trioweb app: a raw ASGI app that sends a frame after its own close.
        if scope["type"] != "websocket":
            return  # no lifespan support: the test client goes on without it
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        try:
            await send({"type": "websocket.send", "text": "after close"})
        except RuntimeError as exc:
            errors.append(str(exc))
        await receive()  # the client's answer to the close

    async with TestClient(raw_app) as client:
        async with client.websocket("/") as ws:
            with pytest.raises(WebSocketClosed):
                await ws.receive()
    assert errors == ["ASGI protocol error: the app sent 'websocket.send' in state 'closed'"]
