# --8<-- [start:imports]
import pytest
import trio
import trio.testing

import myapp
from trioweb import App
from trioweb.testing import TestClient, WebSocketClosed, WebSocketDenied

# --8<-- [end:imports]


# --8<-- [start:echo]
async def test_echo() -> None:
    async with TestClient(myapp.app) as client:  # startup now, shutdown at the end
        async with client.websocket("/echo") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"
        # Leaving the block closed the socket and waited for the handler and its hooks.


# --8<-- [end:echo]


# --8<-- [start:denial]
async def test_a_missing_token_is_denied_with_401() -> None:
    async with TestClient(myapp.app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/private"):
                pass
    assert denied.value.status_code == 401
    assert denied.value.body == b"log in first"
    assert denied.value.headers["www-authenticate"] == "Bearer"


async def test_a_good_token_gets_in() -> None:
    headers = {"authorization": "Bearer s3cret"}
    async with TestClient(myapp.app) as client:
        async with client.websocket("/private", headers=headers) as ws:
            assert await ws.receive_json() == {"secret": 42}


# --8<-- [end:denial]


# --8<-- [start:clock]
async def test_the_countdown_in_fake_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with TestClient(myapp.app) as client:
        async with client.websocket("/countdown/3") as ws:
            start = trio.current_time()
            assert [await ws.receive_json() for _ in range(3)] == [3, 2, 1]
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert trio.current_time() - start == pytest.approx(3)  # no real waiting
    assert (closed.value.code, closed.value.reason) == (4000, "liftoff")


async def test_an_idle_socket_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    # Every wait of the test client is bounded (5 s by default):
    # allow more than the idle timeout.
    async with TestClient(myapp.app, receive_timeout=120) as client:
        async with client.websocket("/echo") as ws:
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
    assert closed.value.code == 1000  # reason "idle for more than 60 s"


# --8<-- [end:clock]


# --8<-- [start:plugin]
@pytest.fixture
def app() -> (
    App
):  # the trioweb pytest plugin wraps it in a running TestClient: `client`
    return myapp.app


async def test_http_with_the_client_fixture(client: TestClient) -> None:
    response = await client.post("/notes", json={"text": "buy milk"})
    assert response.status_code == 201
    assert response.json() == {"saved": {"text": "buy milk"}}


# --8<-- [end:plugin]
