import uuid

import pytest
import trio

from trioweb import App, Request, WebSocket
from trioweb.routing import compile_path
from trioweb.testing import TestClient, WebSocketDenied


async def test_converters_turn_path_segments_into_typed_values():
    app = App()
    seen = {}

    @app.get("/items/{item_id:int}/{price:float}/{key:uuid}/{rest:path}")
    async def item(request: Request, item_id: int, price: float, key: uuid.UUID, rest: str):
        seen.update(item_id=item_id, price=price, key=key, rest=rest)
        return {"ok": True}

    key = uuid.uuid4()
    async with TestClient(app) as client:
        response = await client.get(f"/items/42/9.5/{key}/a/b/c.txt")
    assert response.status_code == 200
    assert seen == {"item_id": 42, "price": 9.5, "key": key, "rest": "a/b/c.txt"}


async def test_a_value_that_does_not_fit_the_converter_is_a_404():
    app = App()

    @app.get("/items/{item_id:int}")
    async def item(request: Request, item_id: int):
        return "found"

    async with TestClient(app) as client:
        assert (await client.get("/items/abc")).status_code == 404
        assert (await client.get("/items/12")).status_code == 200


async def test_websocket_path_parameters_reach_the_handler_by_name():
    app = App()

    @app.websocket("/rooms/{room}/{seat:int}")
    async def room(ws: WebSocket, room: str, seat: int):
        await ws.send_json({"room": room, "seat": seat, "params": ws.path_params})

    async with TestClient(app) as client, client.websocket("/rooms/lobby/7") as ws:
        assert await ws.receive_json() == {
            "room": "lobby",
            "seat": 7,
            "params": {"room": "lobby", "seat": 7},
        }


def test_unknown_converter_is_an_error_at_decoration_time():
    app = App()
    with pytest.raises(ValueError, match="unknown converter 'date'"):

        @app.get("/d/{day:date}")
        async def day(request, day): ...


def test_handler_missing_a_path_parameter_is_an_error_at_decoration_time():
    app = App()
    with pytest.raises(TypeError, match="does not take path parameter"):

        @app.websocket("/u/{user}")
        async def user(ws): ...


def test_handler_wanting_a_parameter_the_path_lacks_is_an_error():
    app = App()
    with pytest.raises(TypeError, match="'room', which is not in the path"):

        @app.websocket("/chat")
        async def chat(ws, room): ...


def test_sync_handler_is_an_error():
    app = App()
    with pytest.raises(TypeError, match="must be an async function"):

        @app.get("/")
        def index(request): ...


def test_http_handlers_cannot_ask_for_a_nursery():
    app = App()
    with pytest.raises(TypeError, match="only WebSocket handlers receive a nursery"):

        @app.get("/")
        async def index(request, nursery: trio.Nursery): ...


@pytest.mark.parametrize(
    "path, message",
    [
        ("no-slash", "must start with '/'"),
        ("/a/{x}/{x}", "appears twice"),
        ("/a/{1x}", "not a Python identifier"),
        ("/a/{x", "unbalanced"),
    ],
)
def test_malformed_patterns_are_rejected(path, message):
    with pytest.raises(ValueError, match=message):
        compile_path(path)


def test_unknown_http_method_is_rejected():
    app = App()
    with pytest.raises(ValueError, match="unknown HTTP method"):
        app.route("/", methods=["FETCH"])


async def test_missing_route_is_404_and_wrong_method_is_405_with_allow():
    app = App()

    @app.route("/thing", methods=["GET", "POST"])
    async def thing(request: Request):
        return "abc"

    async with TestClient(app) as client:
        missing = await client.get("/other")
        wrong = await client.delete("/thing")
        head = await client.head("/thing")
    assert missing.status_code == 404
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD, POST"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "3"


async def test_websocket_handshake_to_unknown_path_gets_a_404_denial():
    app = App()
    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/nowhere"):
                pass
    assert denied.value.status_code == 404
    assert b"/nowhere" in denied.value.body


async def test_nursery_may_be_asked_for_by_annotation_under_any_name():
    app = App()

    @app.websocket("/n")
    async def handler(ws: WebSocket, tasks: trio.Nursery):
        tasks.start_soon(ws.send, "from a task of the connection")

    async with TestClient(app) as client, client.websocket("/n") as ws:
        assert await ws.receive() == "from a task of the connection"
