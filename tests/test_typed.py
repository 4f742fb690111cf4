"""Typed messages: routes that declare what they receive and send (msgspec), what an invalid
message does under each policy, the 1008 limit, and the AsyncAPI document of the routes.

Each error path runs under both policies: ``"close"`` (the handler gets ``InvalidMessage``,
which closes with 1007 if uncaught) and ``"reply"`` (the sender gets an error frame, the socket
goes on). The round trips run through the test client and over a real server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import jsonschema
import msgspec
import pytest
import trio
import trio_websocket
from helpers import closed_with, serving
from trio_websocket import ConnectionClosed

from trioweb import (
    App,
    InvalidJSONMessage,
    InvalidMessage,
    UnexpectedMessageType,
    WebSocket,
    WebSocketDisconnect,
)
from trioweb.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "asyncapi-3.0.0.json").read_text())


# -- the protocol of an auction, as a user would declare it -----------------------------------


class Bid(msgspec.Struct, tag_field="type", tag="bid", forbid_unknown_fields=True):
    """A bid on the lot: unknown fields are an error."""

    amount: int
    lot: str = "main"


class Chat(msgspec.Struct, tag_field="type", tag="chat"):
    """A chat line: unknown fields are ignored (msgspec's default)."""

    text: str


class Point(msgspec.Struct):
    x: int
    y: int


class Draw(msgspec.Struct, tag_field="type", tag="draw"):
    points: list[Point]


class Welcome(msgspec.Struct, tag_field="type", tag="welcome"):
    """Sent once, on joining."""

    room: str


class BidMade(msgspec.Struct, tag_field="type", tag="bid_made"):
    amount: int
    lot: str


class Said(msgspec.Struct, tag_field="type", tag="said"):
    text: str


class Drawn(msgspec.Struct, tag_field="type", tag="drawn"):
    points: int


Incoming = Bid | Chat | Draw
Outgoing = Welcome | BidMade | Said | Drawn


def auction_app(**route_options: Any) -> App:
    """The typed auction route (``/auction/{room}``), with the route options given; after the
    loop it sends how the socket ended as an untyped message, when it still can."""
    app = App()

    @app.websocket("/auction/{room}", receives=Incoming, sends=Outgoing, **route_options)
    async def auction(ws: WebSocket, room: str) -> None:
        """One auction room."""
        await ws.send_typed(Welcome(room))
        async for msg in ws.iter_typed():
            match msg:
                case Bid(amount=amount, lot=lot):
                    await ws.send_typed(BidMade(amount, lot))
                case Chat(text=text):
                    await ws.send_typed(Said(text))
                case Draw(points=points):
                    await ws.send_typed(Drawn(len(points)))
        app.state_of_last = ws.close_code  # type: ignore[attr-defined]

    return app


# -- round trips ------------------------------------------------------------------------------


async def test_typed_round_trip_in_the_test_client() -> None:
    app = auction_app()
    async with TestClient(app) as client, client.websocket("/auction/r1") as ws:
        assert await ws.receive_typed(Outgoing) == Welcome("r1")
        await ws.send_typed(Bid(amount=5))
        assert await ws.receive_typed(Outgoing) == BidMade(5, "main")
        await ws.send_json({"type": "chat", "text": "hello", "mood": "ignored"})
        assert await ws.receive_json() == {"type": "said", "text": "hello"}
        await ws.send(b'{"type": "draw", "points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}')
        assert await ws.receive_typed(Drawn) == Drawn(2)


async def test_typed_round_trip_over_a_real_server() -> None:
    app = auction_app(invalid_messages="reply")
    with trio.fail_after(10):
        async with (
            serving(app) as server,
            trio_websocket.open_websocket_url(server.url("/auction/r2")) as ws,
        ):
            assert json.loads(await ws.get_message()) == {"type": "welcome", "room": "r2"}
            await ws.send_message('{"type":"bid","amount":7,"lot":"vase"}')
            assert json.loads(await ws.get_message()) == {
                "type": "bid_made",
                "amount": 7,
                "lot": "vase",
            }
            await ws.send_message('{"type":"bid","amount":"7"}')
            assert json.loads(await ws.get_message()) == {
                "type": "error",
                "code": "bad_message",
                "detail": "$.amount: expected int, got str",
            }
            await ws.send_message(b'{"type":"chat","text":"still here"}')
            assert json.loads(await ws.get_message()) == {"type": "said", "text": "still here"}


async def test_the_untyped_api_stays_on_a_typed_route() -> None:
    app = App()

    @app.websocket("/mixed", receives=Bid)
    async def mixed(ws: WebSocket) -> None:
        assert await ws.receive_json() == {"free": "form"}
        assert await ws.receive_text() == "plain text"
        bid = await ws.receive_typed()
        await ws.send_json({"got": bid.amount})

    async with TestClient(app) as client, client.websocket("/mixed") as ws:
        await ws.send_json({"free": "form"})
        await ws.send("plain text")
        await ws.send_json({"type": "bid", "amount": 3})
        assert await ws.receive_json() == {"got": 3}


@dataclass
class Move:
    x: int
    y: int


class Note(TypedDict):
    text: str
    pinned: bool


async def test_dataclasses_and_typeddicts_decode_and_validate_too() -> None:
    app = App(invalid_messages="reply")

    @app.websocket("/move", receives=Move, sends=Move)
    async def move(ws: WebSocket) -> None:
        async for m in ws.iter_typed():
            await ws.send_typed(Move(m.x + 1, m.y + 1))

    @app.websocket("/note", receives=Note)
    async def note(ws: WebSocket) -> None:
        async for n in ws.iter_typed():
            await ws.send_typed({"pinned": n["pinned"], "length": len(n["text"])})

    async with TestClient(app) as client:
        async with client.websocket("/move") as ws:
            await ws.send_json({"x": 1, "y": 2})
            assert await ws.receive_typed(Move) == Move(2, 3)
            await ws.send_json({"x": 1})
            assert (await ws.receive_json())["detail"] == "$.y: missing required field"
        async with client.websocket("/note") as ws:
            await ws.send_json({"text": "hi", "pinned": True})
            assert await ws.receive_json() == {"pinned": True, "length": 2}
            await ws.send_json({"text": "hi", "pinned": "yes"})
            assert (await ws.receive_json())["detail"] == "$.pinned: expected bool, got str"


async def test_a_type_given_to_receive_typed_is_used_instead_of_the_routes() -> None:
    app = App()

    @app.websocket("/explicit", receives=Bid)
    async def explicit(ws: WebSocket) -> None:
        first = await ws.receive_typed(Bid | Chat)
        points = ws.iter_typed(Point)
        total = [await anext(points), await anext(points)]
        await ws.send_json([type(first).__name__, sum(p.x for p in total)])

    async with TestClient(app) as client, client.websocket("/explicit") as ws:
        await ws.send_json({"type": "chat", "text": "x"})
        await ws.send_json({"x": 1, "y": 1})
        await ws.send_json({"x": 2, "y": 2})
        assert await ws.receive_json() == ["Chat", 3]


async def test_receive_typed_without_a_type_on_an_untyped_route_is_a_bug_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.websocket("/untyped")
    async def untyped(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_typed()

    async with TestClient(app) as client, client.websocket("/untyped") as ws:
        assert (await closed_with(ws)).code == 1011
    assert "declares no receives= type" in caplog.text


# -- sends ------------------------------------------------------------------------------------


async def test_send_typed_refuses_a_type_the_route_does_not_declare() -> None:
    app = App()

    @app.websocket("/strict", sends=Welcome | Said)
    async def strict(ws: WebSocket) -> None:
        await ws.send_typed(Said("fine"))
        try:
            await ws.send_typed(BidMade(1, "x"))
        except TypeError as exc:
            await ws.send_json({"refused": str(exc)})

    async with TestClient(app) as client, client.websocket("/strict") as ws:
        assert await ws.receive_typed(Said) == Said("fine")
        refused = (await ws.receive_json())["refused"]
    assert refused.startswith("send_typed(): a BidMade is not among the types this route sends")


async def test_send_typed_escapes_lone_surrogates_as_send_json_does() -> None:
    app = App()

    @app.websocket("/odd", sends=Said)
    async def odd(ws: WebSocket) -> None:
        await ws.send_typed(Said("\ud800 half a pair"))

    async with TestClient(app) as client, client.websocket("/odd") as ws:
        assert await ws.receive() == '{"type":"said","text":"\\ud800 half a pair"}'


# -- invalid messages, under both policies ----------------------------------------------------

#: (what the client sends, the detail, its path): every way a message can be wrong.
INVALID = [
    pytest.param(
        "{not json", "invalid JSON: object keys must be strings (byte 1)", None, id="json"
    ),
    pytest.param("", "invalid JSON: input data was truncated", None, id="empty"),
    pytest.param("[" * 5000 + "]" * 5000, "$: expected object, got array", "$", id="array"),
    pytest.param(
        '{"type": "sell", "amount": 1}',
        "$.type: unknown message type 'sell' (known: 'bid', 'chat', 'draw')",
        "$.type",
        id="wrong-tag",
    ),
    pytest.param('{"amount": 1}', "$.type: missing required field", "$.type", id="no-tag"),
    pytest.param(
        '{"type": "bid", "amount": "5"}',
        "$.amount: expected int, got str",
        "$.amount",
        id="wrong-field-type",
    ),
    pytest.param(
        '{"type": "bid"}', "$.amount: missing required field", "$.amount", id="missing-field"
    ),
    pytest.param(
        '{"type": "bid", "amount": 5, "bonus": 1}',
        "$.bonus: unknown field",
        "$.bonus",
        id="extra-field-forbidden",
    ),
    pytest.param(
        '{"type": "draw", "points": [{"x": 1, "y": 1}, {"x": 1}]}',
        "$.points[1].y: missing required field",
        "$.points[1].y",
        id="nested",
    ),
]


@pytest.mark.parametrize(("sent", "detail", "path"), INVALID)
async def test_an_invalid_message_closes_1007_with_its_detail_by_default(
    sent: str, detail: str, path: str | None
) -> None:
    app = auction_app()
    async with TestClient(app) as client, client.websocket("/auction/r") as ws:
        await ws.receive()  # the welcome
        await ws.send(sent)
        closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (1007, detail)


@pytest.mark.parametrize(("sent", "detail", "path"), INVALID)
async def test_an_invalid_message_gets_an_error_frame_and_the_socket_goes_on(
    sent: str, detail: str, path: str | None
) -> None:
    app = auction_app(invalid_messages="reply")
    async with TestClient(app) as client, client.websocket("/auction/r") as ws:
        await ws.receive()  # the welcome
        await ws.send(sent)
        assert await ws.receive_json() == {"type": "error", "code": "bad_message", "detail": detail}
        await ws.send_json({"type": "bid", "amount": 2})
        assert await ws.receive_typed(BidMade) == BidMade(2, "main")


@pytest.mark.parametrize(("sent", "detail", "path"), INVALID)
async def test_a_handler_that_catches_invalid_message_decides(
    sent: str, detail: str, path: str | None
) -> None:
    app = App()
    caught: list[InvalidMessage] = []

    @app.websocket("/catch", receives=Incoming)
    async def catch(ws: WebSocket) -> None:
        while True:
            try:
                msg = await ws.receive_typed()
            except InvalidMessage as exc:
                caught.append(exc)
                await ws.send_json({"my_error": str(exc)})
            else:
                await ws.send_json({"ok": type(msg).__name__})

    async with TestClient(app) as client, client.websocket("/catch") as ws:
        await ws.send(sent)
        assert await ws.receive_json() == {"my_error": detail}
        await ws.send_json({"type": "chat", "text": "x"})
        assert await ws.receive_json() == {"ok": "Chat"}
    (exc,) = caught
    # What happened, not a close that did not happen.
    assert str(exc) == exc.detail == detail
    assert "close" not in str(exc) and "1007" not in str(exc)
    assert exc.path == path
    assert exc.data == sent
    assert isinstance(exc, ValueError)
    assert isinstance(exc, InvalidJSONMessage) == (path is None)


async def test_extra_fields_are_ignored_where_the_struct_allows_them() -> None:
    app = auction_app()
    async with TestClient(app) as client, client.websocket("/auction/r") as ws:
        await ws.receive()
        await ws.send_json({"type": "chat", "text": "hi", "extra": [1, 2]})
        assert await ws.receive_typed(Said) == Said("hi")


async def test_the_close_reason_is_cut_to_fit_a_close_frame_the_exception_is_not() -> None:
    app = App()
    long_name = "x" * 200

    @app.websocket("/long", receives=Bid)
    async def long(ws: WebSocket) -> None:
        try:
            await ws.receive_typed()
        except InvalidMessage as exc:
            await ws.send_json({"detail": exc.detail, "reason": exc.reason})

    async with TestClient(app) as client, client.websocket("/long") as ws:
        await ws.send_json({"type": "bid", "amount": 1, long_name: 1})
        answer = await ws.receive_json()
    assert answer["detail"] == f"$.{long_name}: unknown field"
    assert len(answer["reason"].encode()) == 123
    assert answer["detail"].startswith(answer["reason"])


# -- the limit --------------------------------------------------------------------------------


async def test_past_max_invalid_messages_the_socket_closes_1008() -> None:
    app = auction_app(invalid_messages="reply", max_invalid_messages=3)
    async with TestClient(app) as client, client.websocket("/auction/r") as ws:
        await ws.receive()
        for _ in range(3):
            await ws.send("nope")
            assert (await ws.receive_json())["type"] == "error"
        await ws.send_json({"type": "bid", "amount": 1})  # valid ones do not count
        assert await ws.receive_typed(BidMade) == BidMade(1, "main")
        await ws.send("nope")  # the fourth
        closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (1008, "more than 3 invalid messages")
    # The handler's loop ended as on any close, and the code after it saw the 1008.
    assert app.state_of_last == 1008  # type: ignore[attr-defined]


async def test_the_limit_holds_for_a_handler_that_catches_under_close() -> None:
    app = App(max_invalid_messages=2)
    seen: list[str] = []

    @app.websocket("/catch", receives=Bid)
    async def catch(ws: WebSocket) -> None:
        while True:
            try:
                await ws.receive_typed()
            except InvalidMessage as exc:
                seen.append(exc.detail)
            except WebSocketDisconnect as exc:
                seen.append(str(exc))
                return

    async with TestClient(app) as client, client.websocket("/catch") as ws:
        for _ in range(3):
            await ws.send("{}")
        closed = await closed_with(ws)
    assert closed.code == 1008
    assert seen == [
        "$.amount: missing required field",
        "$.amount: missing required field",
        "WebSocket closed with code 1008: more than 2 invalid messages",
    ]


async def test_max_invalid_messages_none_is_no_limit_and_zero_allows_none() -> None:
    app = App(invalid_messages="reply", max_invalid_messages=None)

    @app.websocket("/any", receives=Bid)
    async def anything(ws: WebSocket) -> None:
        async for _ in ws.iter_typed():
            await ws.send("ok")

    @app.websocket("/none", receives=Bid, max_invalid_messages=0)
    async def none(ws: WebSocket) -> None:
        async for _ in ws.iter_typed():
            await ws.send("ok")

    async with TestClient(app) as client:
        async with client.websocket("/any") as ws:
            for _ in range(50):
                await ws.send("[]")
                assert (await ws.receive_json())["type"] == "error"
            await ws.send_json({"type": "bid", "amount": 1})
            assert await ws.receive() == "ok"
        async with client.websocket("/none") as ws:
            await ws.send("[]")
            closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (1008, "more than 0 invalid messages")


async def test_the_limit_and_the_policies_over_a_real_server() -> None:
    app = auction_app(max_invalid_messages=1, invalid_messages="reply")

    @app.websocket("/strict", receives=Bid)
    async def strict(ws: WebSocket) -> None:
        async for _ in ws.iter_typed():
            pass

    with trio.fail_after(10):
        async with serving(app) as server:
            async with trio_websocket.open_websocket_url(server.url("/auction/r")) as ws:
                await ws.get_message()
                await ws.send_message('{"type":"bid","amount":1,"x":2}')
                assert json.loads(await ws.get_message())["detail"] == "$.x: unknown field"
                await ws.send_message("{")
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.get_message()
                assert caught.value.reason.code == 1008
                assert caught.value.reason.reason == "more than 1 invalid message"
            async with trio_websocket.open_websocket_url(server.url("/strict")) as ws:
                await ws.send_message('{"type":"chat"}')
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.get_message()
                assert caught.value.reason.code == 1007
                assert caught.value.reason.reason == (
                    "$.type: unknown message type 'chat' (known: 'bid')"
                )


# -- policies: the app's, the route's, the error frame ----------------------------------------


async def test_a_route_overrides_the_apps_policy() -> None:
    app = App(invalid_messages="reply")

    @app.websocket("/app-policy", receives=Bid)
    async def app_policy(ws: WebSocket) -> None:
        async for _ in ws.iter_typed():
            pass

    @app.websocket("/own-policy", receives=Bid, invalid_messages="close")
    async def own_policy(ws: WebSocket) -> None:
        async for _ in ws.iter_typed():
            pass

    async with TestClient(app) as client:
        async with client.websocket("/app-policy") as ws:
            await ws.send("[]")
            assert (await ws.receive_json())["code"] == "bad_message"
        async with client.websocket("/own-policy") as ws:
            await ws.send("[]")
            assert (await closed_with(ws)).code == 1007


class Oops(msgspec.Struct, tag_field="type", tag="oops"):
    where: str | None
    why: str


def oops(error: InvalidMessage) -> Oops:
    return Oops(error.path, error.detail)


async def test_the_error_frame_is_the_apps_to_shape() -> None:
    app = App(invalid_messages="reply", error_frame=oops)

    @app.websocket("/shaped", receives=Bid)
    async def shaped(ws: WebSocket) -> None:
        async for _ in ws.iter_typed():
            pass

    @app.websocket("/dict", receives=Bid, error_frame=lambda e: {"error": e.detail, "at": e.path})
    async def as_dict(ws: WebSocket) -> None:
        async for _ in ws.iter_typed():
            pass

    async with TestClient(app) as client:
        async with client.websocket("/shaped") as ws:
            await ws.send('{"type":"bid","amount":1.5}')
            assert await ws.receive_typed(Oops) == Oops(
                "$.amount", "$.amount: expected int, got float"
            )
            await ws.send("!")
            assert await ws.receive_typed(Oops) == Oops(
                None, "invalid JSON: invalid character (byte 0)"
            )
        async with client.websocket("/dict") as ws:
            await ws.send("[1]")
            assert await ws.receive_json() == {"error": "$: expected object, got array", "at": "$"}


def test_mistakes_in_a_declaration_are_errors_at_the_decorator() -> None:
    app = App()

    async def handler(ws: WebSocket) -> None:
        pass

    with pytest.raises(TypeError, match=r"receives=.*route '/ws'.*not supported"):
        app.websocket("/ws", receives=Point | Move)(handler)
    with pytest.raises(TypeError, match=r"sends=object of route '/ws'"):
        app.websocket("/ws", sends=object)(handler)
    with pytest.raises(ValueError, match='invalid_messages must be "close" or "reply"'):
        app.websocket("/ws", invalid_messages="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_invalid_messages must be"):
        App(max_invalid_messages=-1)
    assert app.router.routes == []


def test_the_policy_is_fixed_while_the_app_serves() -> None:
    app = App()
    app._fix_settings()
    with pytest.raises(RuntimeError, match="invalid_messages cannot change while"):
        app.invalid_messages = "reply"


# -- the untyped API's exceptions say what happened -------------------------------------------


async def test_untyped_message_errors_say_what_happened_and_still_close_uncaught() -> None:
    app = App()
    told: list[str] = []

    @app.websocket("/json")
    async def json_route(ws: WebSocket) -> None:
        try:
            await ws.receive_json()
        except InvalidJSONMessage as exc:
            told.append(str(exc))
            assert isinstance(exc, InvalidMessage) and exc.path is None
        try:
            await ws.receive_bytes()
        except UnexpectedMessageType as exc:
            told.append(str(exc))
        await ws.receive_json()  # uncaught this time

    async with TestClient(app) as client, client.websocket("/json") as ws:
        await ws.send("{nope")
        await ws.send("text")
        await ws.send("{nope")
        closed = await closed_with(ws)
    assert told == [
        "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "expected a binary message, got text",
    ]
    assert closed.code == 1007
    assert closed.reason == told[0]


# -- AsyncAPI ---------------------------------------------------------------------------------


def described_app() -> App:
    """Routes of every kind the document describes."""
    app = auction_app(invalid_messages="reply")

    @app.websocket("/plain")
    async def plain(ws: WebSocket) -> None:
        """An echo with no declared types."""

    @app.websocket("/boards/{board:int}/{rest:path}", receives=Draw, sends=Drawn | Said)
    async def board(ws: WebSocket, board: int, rest: str) -> None:
        pass

    @app.websocket("/moves", receives=Move, sends=Note, invalid_messages="reply", error_frame=oops)
    async def moves(ws: WebSocket) -> None:
        pass

    @app.get("/health")
    async def health(request: Any) -> str:
        return "ok"

    return app


def check_refs(document: dict[str, Any]) -> None:
    """Every ``$ref`` of the document points into the document."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.startswith("#/"), ref
                target: Any = document
                for part in ref[2:].split("/"):
                    assert part in target, f"{ref} does not resolve"
                    target = target[part]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def validate(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(document)
    check_refs(document)


def test_the_asyncapi_document_is_valid_against_the_official_schema() -> None:
    document = described_app().asyncapi(title="Auction house", version="2.1.0")
    validate(document)
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {"title": "Auction house", "version": "2.1.0"}
    channels = document["channels"]
    # One channel per WebSocket route, none for the HTTP route.
    assert list(channels) == ["auction", "plain", "board", "moves"]
    assert channels["auction"]["address"] == "/auction/{room}"
    assert channels["auction"]["description"] == "One auction room."
    assert channels["board"]["address"] == "/boards/{board}/{rest}"
    assert set(channels["board"]["parameters"]) == {"board", "rest"}
    # The app's operations: what it receives, what it sends.
    operations = document["operations"]
    assert operations["auction.receive"]["action"] == "receive"
    assert operations["auction.send"]["action"] == "send"

    def names(operation: str) -> list[str]:
        return [ref["$ref"].rsplit("/", 1)[1] for ref in operations[operation]["messages"]]

    assert names("auction.receive") == ["Bid", "Chat", "Draw"]
    # Under "reply", the error frame is among what the app sends.
    assert names("auction.send") == ["Welcome", "BidMade", "Said", "Drawn", "InvalidMessageReply"]
    assert names("plain.receive") == names("plain.send") == ["Untyped"]
    assert names("board.send") == ["Drawn", "Said"]  # (close: no error frame)
    assert names("moves.receive") == ["Move"]
    assert names("moves.send") == ["Note", "Oops"]  # the custom frame's annotated type
    components = document["components"]
    assert components["messages"]["Untyped"]["payload"] == {}
    assert components["messages"]["Bid"]["payload"] == {"$ref": "#/components/schemas/Bid"}
    assert components["messages"]["Welcome"]["summary"] == "Sent once, on joining."
    bid = components["schemas"]["Bid"]
    assert bid["properties"]["amount"] == {"type": "integer"}
    assert bid["required"] == ["type", "amount"]
    assert bid["additionalProperties"] is False  # forbid_unknown_fields
    assert components["schemas"]["Point"]["required"] == ["x", "y"]  # shared, nested
    assert components["schemas"]["InvalidMessageReply"]["properties"]["detail"] == {
        "type": "string"
    }


def test_an_app_without_typed_routes_has_a_valid_document() -> None:
    app = App()

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        pass

    validate(app.asyncapi())
    validate(App().asyncapi())  # no routes at all


def test_the_schema_check_catches_a_broken_document() -> None:
    document = described_app().asyncapi()
    document["operations"]["auction.send"]["action"] = "publish"  # AsyncAPI 2's word
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


async def test_serve_asyncapi_serves_the_document_at_the_apps_path() -> None:
    app = described_app()
    app.serve_asyncapi("/docs/asyncapi.json", title="Auction house", version="3.0")
    async with TestClient(app) as client:
        response = await client.get("/docs/asyncapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        document = response.json()

        @app.websocket("/late", receives=Chat)
        async def late(ws: WebSocket) -> None:
            pass

        later = (await client.get("/docs/asyncapi.json")).json()
    validate(document)
    assert later == json.loads(json.dumps(app.asyncapi()))
    assert document["info"] == {"title": "Auction house", "version": "3.0"}
    assert "late" not in document["channels"] and "late" in later["channels"]


APP_MODULE = """
import msgspec
from trioweb import App, WebSocket

class Ping(msgspec.Struct, tag_field="type", tag="ping"):
    n: int

app = App()
app.serve_asyncapi(title="Pinger", version="9")

@app.websocket("/ping", receives=Ping, sends=Ping)
async def ping(ws: WebSocket) -> None:
    async for msg in ws.iter_typed():
        await ws.send_typed(msg)
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioweb", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_the_cli_prints_and_writes_the_document(tmp_path: Path) -> None:
    (tmp_path / "pinger.py").write_text(APP_MODULE)
    printed = run_cli("asyncapi", "pinger:app", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    document = json.loads(printed.stdout)
    validate(document)
    assert document["info"] == {"title": "Pinger", "version": "9"}  # as the app serves it
    assert document["channels"]["ping"]["address"] == "/ping"

    written = run_cli(
        "asyncapi", "pinger:app", "--output", "out.json", "--title", "Other", cwd=tmp_path
    )
    assert (written.returncode, written.stdout) == (0, "")
    assert json.loads((tmp_path / "out.json").read_text())["info"]["title"] == "Other"

    missing = run_cli("asyncapi", "nowhere:app", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == "trioweb: error: cannot import module 'nowhere': not found\n"


# -- made once --------------------------------------------------------------------------------


async def test_decoders_are_made_at_the_decorator_not_per_socket_or_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = auction_app()
    made: list[Any] = []
    real = msgspec.json.Decoder

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(msgspec.json, "Decoder", counting)
    async with TestClient(app) as client:
        for room in ("a", "b"):
            async with client.websocket(f"/auction/{room}") as ws:
                await ws.receive()
                for n in range(20):
                    await ws.send_json({"type": "bid", "amount": n})
                    await ws.receive()
    assert made == []


async def test_a_client_that_leaves_ends_iter_typed_quietly() -> None:
    app = auction_app()
    async with TestClient(app) as client:
        async with client.websocket("/auction/x") as ws:
            await ws.receive()
            await ws.close(1001)
    assert app.state_of_last == 1001  # type: ignore[attr-defined]
