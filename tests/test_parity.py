"""What users of Quart, API Star, Bocadillo, Microdot and Starlette look for on day one."""

import base64
import logging

import pytest
from helpers import closed_with

from trioweb import App, CloseCode, PlainTextResponse, Request, WebSocket, WebSocketClose
from trioweb.datastructures import parse_authorization
from trioweb.testing import TestClient, WebSocketDenied

# -- close codes -------------------------------------------------------------------------


def test_close_codes_cover_the_registry():
    assert CloseCode.NORMAL == 1000
    assert CloseCode.GOING_AWAY == 1001
    assert CloseCode.PROTOCOL_ERROR == 1002
    assert CloseCode.UNSUPPORTED_DATA == 1003
    assert CloseCode.INVALID_PAYLOAD == 1007
    assert CloseCode.POLICY_VIOLATION == 1008
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.INTERNAL_ERROR == 1011
    assert CloseCode.TRY_AGAIN_LATER == 1013
    assert CloseCode.NORMAL_CLOSURE is CloseCode.NORMAL  # RFC 6455's name, as an alias
    assert sorted(int(c) for c in CloseCode) == list(range(1000, 1016))
    assert [c for c in CloseCode if not c.sendable] == [
        CloseCode.RESERVED,
        CloseCode.NO_STATUS_RECEIVED,
        CloseCode.ABNORMAL_CLOSURE,
        CloseCode.TLS_HANDSHAKE,
    ]


async def test_close_codes_are_taken_everywhere_and_reported_by_name():
    app = App()
    seen = []

    @app.websocket("/{how}")
    async def handler(ws: WebSocket, how: str):
        await ws.accept()
        if how == "close":
            await ws.close(CloseCode.GOING_AWAY, "bye")
        elif how == "raise":
            raise WebSocketClose(CloseCode.TRY_AGAIN_LATER, "later")
        else:
            await ws.receive()

    @app.after_websocket
    async def record(ws: WebSocket):
        seen.append(repr(ws.close_code))

    async with TestClient(app) as client:
        async with client.websocket("/close") as ws:
            closed = await closed_with(ws)
            assert closed.code is CloseCode.GOING_AWAY
        async with client.websocket("/raise") as ws:
            assert (await closed_with(ws)).code is CloseCode.TRY_AGAIN_LATER
        async with client.websocket("/wait") as ws:
            await ws.close(CloseCode.POLICY_VIOLATION)
    assert seen == [
        "<CloseCode.GOING_AWAY: 1001>",
        "<CloseCode.TRY_AGAIN_LATER: 1013>",
        "<CloseCode.POLICY_VIOLATION: 1008>",
    ]


def test_unsendable_close_codes_are_refused_by_name_too():
    with pytest.raises(ValueError, match="1006 is not a close code an endpoint may send"):
        WebSocketClose(CloseCode.ABNORMAL_CLOSURE)


# -- authorization -----------------------------------------------------------------------


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice:s3cr:et"), ("basic", "alice", "s3cr:et", None)),
        (basic("émile:pässword"), ("basic", "émile", "pässword", None)),
        ("bearer abc.def-ghi", ("bearer", None, None, "abc.def-ghi")),
        ("Bearer  token  ", ("bearer", None, None, "token")),
        ("Digest username=x, realm=y", ("digest", None, None, None)),
        (None, None),
        ("Basic", None),
        ("Basic !!!notbase64", None),
        (basic("no-colon"), None),
        ("Bearer two words", None),
        ("", None),
    ],
)
def test_authorization_parsing(header, expected):
    parsed = parse_authorization(header)
    if expected is None:
        assert parsed is None
    else:
        assert (parsed.scheme, parsed.username, parsed.password, parsed.token) == expected


def test_malformed_authorization_is_logged_at_debug_never_raised(caplog):
    with caplog.at_level(logging.DEBUG, logger="trioweb"):
        assert parse_authorization("Basic %%%") is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_authorization_repr_hides_secrets():
    parsed = parse_authorization(basic("alice:hunter2"))
    assert "hunter2" not in repr(parsed)


async def test_authorization_on_websockets_and_requests():
    app = App()

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket):
        auth = ws.authorization
        if auth is None or (auth.username, auth.password) != ("alice", "pw"):
            return "Invalid password", 403  # Quart style: a returned response denies
        await ws.send(f"hello {auth.username}")

    @app.get("/http")
    async def http_handler(request: Request):
        auth = request.authorization
        return {"token": auth.token if auth else None}

    async with TestClient(app) as client:
        async with client.websocket("/ws", headers={"authorization": basic("alice:pw")}) as ws:
            assert await ws.receive() == "hello alice"
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/ws", headers={"authorization": basic("alice:no")}):
                pass
        response = await client.get("/http", headers={"authorization": "Bearer t0k"})
    assert (denied.value.status_code, denied.value.body) == (403, b"Invalid password")
    assert response.json() == {"token": "t0k"}


# -- a returned response denies the handshake ---------------------------------------------


async def test_a_hook_or_handler_returning_a_response_denies_with_it():
    app = App()

    @app.before_websocket
    async def maintenance(ws: WebSocket):
        if ws.path == "/down":
            return PlainTextResponse("down for maintenance", 503, {"retry-after": "60"})
        return None

    @app.websocket("/{name}")
    async def handler(ws: WebSocket, name: str):
        if name == "teapot":
            return {"error": "teapot"}, 418
        if name == "nonsense":
            return 42  # not a response: a 500, logged
        await ws.send("in")

    async with TestClient(app) as client:
        for path, status, body in [
            ("/down", 503, b"down for maintenance"),
            ("/teapot", 418, b'{"error":"teapot"}'),
            ("/nonsense", 500, b"Internal Server Error"),
        ]:
            with pytest.raises(WebSocketDenied) as denied:
                async with client.websocket(path):
                    pass
            assert (denied.value.status_code, denied.value.body) == (status, body)
        async with client.websocket("/fine") as ws:
            assert await ws.receive() == "in"


# -- raw messages ------------------------------------------------------------------------


async def test_raw_messages_go_through_the_runtime():
    app = App()
    errors = []

    @app.websocket("/raw")
    async def raw(ws: WebSocket):
        await ws.send_raw({"type": "websocket.accept", "subprotocol": "v2"})
        message = await ws.receive_raw()
        await ws.send_raw({"type": "websocket.send", "text": f"got {message['text']}"})
        message = await ws.receive_raw()
        await ws.send_raw({"type": "websocket.send", "bytes": message["bytes"][::-1]})
        for bad in (
            {"type": "websocket.send"},
            {"type": "websocket.send", "text": "a", "bytes": b"b"},
            {"type": "http.response.start"},
        ):
            try:
                await ws.send_raw(bad)
            except ValueError as exc:
                errors.append(str(exc))
        await ws.send_raw({"type": "websocket.close", "code": 4000, "reason": "raw close"})
        try:
            await ws.send_raw({"type": "websocket.send", "text": "after close"})
        except Exception as exc:
            errors.append(type(exc).__name__)

    async with TestClient(app) as client:
        async with client.websocket("/raw", subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
            await ws.send("one")
            assert await ws.receive() == "got one"
            await ws.send(b"abc")
            assert await ws.receive() == b"cba"
            closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (4000, "raw close")
    assert errors == [
        "a websocket.send message carries exactly one of text or bytes",
        "a websocket.send message carries exactly one of text or bytes",
        "send_raw() takes websocket.send, websocket.accept or websocket.close, "
        "not 'http.response.start'",
        "WebSocketDisconnect",
    ]
