"""The WebSocket object users hold, and every row of the close table, through the test client."""

import json
import logging

import pytest
import trio
from helpers import closed_with

from trioweb import (
    App,
    HTTPException,
    InvalidJSONMessage,
    UnexpectedMessageType,
    WebSocket,
    WebSocketClose,
    WebSocketDisconnect,
    abort,
)
from trioweb.testing import TestClient, WebSocketDenied

# -- request data ------------------------------------------------------------------------


async def test_handshake_data_is_exposed():
    app = App()

    @app.websocket("/info")
    async def info(ws: WebSocket):
        ws.state.seen = True
        await ws.send_json(
            {
                "path": ws.path,
                "scheme": ws.scheme,
                "query": dict(ws.query_params),
                "tags": ws.query_params.getlist("tag"),
                "header": ws.headers["X-Custom"],
                "multi": ws.headers.getlist("x-multi"),
                "cookies": ws.cookies,
                "client": list(ws.client),
                "offered": ws.subprotocols,
                "state": ws.state.seen,
                "app": ws.app is app,
                "raw_scope": ws.scope["type"],
                "url": ws.url,
            }
        )

    headers = {"x-custom": "yes", "cookie": 'session=abc; theme="dark"', "x-multi": "1"}
    async with (
        TestClient(app) as client,
        client.websocket("/info?tag=a&tag=b&q=1", subprotocols=["v1"], headers=headers) as ws,
    ):
        data = await ws.receive_json()
    assert data == {
        "path": "/info",
        "scheme": "ws",
        "query": {"tag": "a", "q": "1"},
        "tags": ["a", "b"],
        "header": "yes",
        "multi": ["1"],
        "cookies": {"session": "abc", "theme": "dark"},
        "client": ["127.0.0.1", 50000],
        "offered": ["v1"],
        "state": True,
        "app": True,
        "raw_scope": "websocket",
        "url": "ws://testserver/info?tag=a&tag=b&q=1",
    }


async def test_state_properties_follow_the_socket_life():
    app = App()
    seen = []

    @app.websocket("/life")
    async def life(ws: WebSocket):
        seen.append((ws.connecting, ws.connected, ws.closed, ws.close_code))
        await ws.accept()
        seen.append((ws.connecting, ws.connected, ws.closed, ws.close_code))
        await ws.close(4100, "later")
        seen.append((ws.connecting, ws.connected, ws.closed, ws.close_code, ws.close_reason))

    async with TestClient(app) as client, client.websocket("/life") as ws:
        closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (4100, "later")
    assert seen == [
        (True, False, False, None),
        (False, True, False, None),
        (False, False, True, 4100, "later"),
    ]


# -- accept, subprotocols, reject --------------------------------------------------------


async def test_accept_with_a_subprotocol_and_headers():
    app = App()

    @app.websocket("/proto")
    async def proto(ws: WebSocket):
        await ws.accept(subprotocol="chat.v2", headers={"x-server": "trioweb"})
        await ws.send(ws.subprotocol)

    async with TestClient(app) as client:
        async with client.websocket("/proto", subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.headers["x-server"] == "trioweb"
            assert await ws.receive() == "chat.v2"


async def test_accepting_a_subprotocol_the_client_did_not_offer_is_an_error_500():
    app = App()

    @app.websocket("/proto")
    async def proto(ws: WebSocket):
        await ws.accept(subprotocol="nope")

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/proto", subprotocols=["a"]):
                pass
    assert denied.value.status_code == 500


async def test_accepting_twice_is_an_error():
    app = App()
    errors = []

    @app.websocket("/twice")
    async def twice(ws: WebSocket):
        await ws.accept()
        try:
            await ws.accept()
        except RuntimeError as exc:
            errors.append(str(exc))
        await ws.send("ok")

    async with TestClient(app) as client, client.websocket("/twice") as ws:
        assert await ws.receive() == "ok"
    assert errors == ["accept() called on a WebSocket that is already accepted"]


async def test_reject_sends_a_real_http_response():
    app = App()

    @app.websocket("/teapot")
    async def teapot(ws: WebSocket):
        await ws.reject(418, body="short and stout", headers={"x-why": "tea"})

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/teapot"):
                pass
    assert denied.value.status_code == 418
    assert denied.value.body == b"short and stout"
    assert denied.value.headers["x-why"] == "tea"
    assert denied.value.headers["content-type"].startswith("text/plain")


async def test_reject_after_accept_is_an_error():
    app = App()
    errors = []

    @app.websocket("/late")
    async def late(ws: WebSocket):
        await ws.accept()
        try:
            await ws.reject(403)
        except RuntimeError as exc:
            errors.append(str(exc))

    async with TestClient(app) as client, client.websocket("/late") as ws:
        assert (await closed_with(ws)).code == 1000
    assert errors == ["reject() is only possible before accept(); after it, use close()"]


async def test_reject_without_the_denial_extension_falls_back_to_a_403_close():
    app = App()

    @app.websocket("/deny")
    async def deny(ws: WebSocket):
        await ws.reject(401, body=b"who are you")

    sent = []
    first = True

    async def receive():
        nonlocal first
        if first:
            first = False
            return {"type": "websocket.connect"}
        await trio.sleep_forever()

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/deny", "headers": [], "subprotocols": []}
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


# -- close -------------------------------------------------------------------------------


async def test_second_close_raises_and_ensure_closed_is_always_safe():
    app = App()
    outcome = []

    @app.websocket("/close")
    async def close(ws: WebSocket):
        await ws.accept()
        await ws.ensure_closed(4000, "first")
        await ws.ensure_closed(4001, "ignored")
        try:
            await ws.close()
        except RuntimeError as exc:
            outcome.append(str(exc))

    async with TestClient(app) as client, client.websocket("/close") as ws:
        closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (4000, "first")
    assert outcome == ["close() called on a WebSocket already closed by the app"]


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
async def test_close_with_a_code_that_may_not_be_sent_is_an_error(code):
    app = App()
    errors = []

    @app.websocket("/bad")
    async def bad(ws: WebSocket):
        await ws.accept()
        try:
            await ws.close(code)
        except ValueError as exc:
            errors.append(str(exc))

    async with TestClient(app) as client, client.websocket("/bad") as ws:
        assert (await closed_with(ws)).code == 1000
    assert len(errors) == 1 and str(code) in errors[0]


async def test_close_reason_is_cut_to_fit_a_close_frame():
    app = App()

    @app.websocket("/long")
    async def long(ws: WebSocket):
        await ws.accept()
        await ws.close(4000, "é" * 100)

    async with TestClient(app) as client, client.websocket("/long") as ws:
        closed = await closed_with(ws)
    assert closed.reason == "é" * 61
    assert len(closed.reason.encode()) <= 123


# -- receiving and sending ---------------------------------------------------------------


async def test_every_send_and_receive_helper():
    app = App()

    @app.websocket("/all")
    async def everything(ws: WebSocket):
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.send_bytes(await ws.receive_bytes())
        await ws.send_json(await ws.receive_json())
        await ws.send(await ws.receive())
        await ws.send(await ws.receive())
        await ws.send_json(await ws.receive_json(loads=lambda raw: {"custom": json.loads(raw)}))
        await ws.send_json([1, 2], dumps=lambda data: "dumped:" + json.dumps(data))

    async with TestClient(app) as client, client.websocket("/all") as ws:
        await ws.send_text("text")
        assert await ws.receive_text() == "text"
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"
        await ws.send_json({"a": [1, "é"]})
        assert await ws.receive_json() == {"a": [1, "é"]}
        await ws.send("plain")
        assert await ws.receive() == "plain"
        await ws.send(b"raw")
        assert await ws.receive() == b"raw"
        await ws.send_json(5)
        assert await ws.receive_json() == {"custom": 5}
        assert await ws.receive() == "dumped:[1, 2]"


async def test_receive_json_accepts_utf8_bytes():
    app = App()

    @app.websocket("/j")
    async def j(ws: WebSocket):
        await ws.send_json(await ws.receive_json())

    async with TestClient(app) as client, client.websocket("/j") as ws:
        await ws.send_bytes('{"k": "ü"}'.encode())
        assert await ws.receive_json() == {"k": "ü"}


async def test_send_rejects_other_types():
    app = App()
    errors = []

    @app.websocket("/t")
    async def t(ws: WebSocket):
        try:
            await ws.send(123)  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(str(exc))
        await ws.send("done")

    async with TestClient(app) as client, client.websocket("/t") as ws:
        assert await ws.receive() == "done"
    assert errors == ["send() takes str or bytes, not int"]


async def test_send_and_receive_before_accept_accept_implicitly():
    app = App()

    @app.websocket("/send-first")
    async def send_first(ws: WebSocket):
        await ws.send("hello")

    @app.websocket("/receive-first")
    async def receive_first(ws: WebSocket):
        await ws.send(await ws.receive())

    async with TestClient(app) as client:
        async with client.websocket("/send-first") as ws:
            assert await ws.receive() == "hello"
        async with client.websocket("/receive-first") as ws:
            await ws.send("echo")
            assert await ws.receive() == "echo"


async def test_iterators_end_quietly_when_the_client_closes():
    app = App()
    got = {}

    @app.websocket("/iter/{kind}")
    async def iterate(ws: WebSocket, kind: str):
        await ws.accept()
        iterator = {
            "any": ws,
            "text": ws.iter_text(),
            "bytes": ws.iter_bytes(),
            "json": ws.iter_json(),
        }[kind]
        # The loop ends without an exception; the disconnect then cancels the handler at its
        # next checkpoint, so the line right after the loop still runs.
        got[kind] = [message async for message in iterator]

    expected = {
        "any": ["a", b"b"],
        "text": ["a", "b"],
        "bytes": [b"a", b"b"],
        "json": [1, {"two": 2}],
    }
    async with TestClient(app) as client:
        for kind, messages in expected.items():
            async with client.websocket(f"/iter/{kind}") as ws:
                for message in messages:
                    if kind == "json":
                        await ws.send_json(message)
                    else:
                        await ws.send(message)
                await trio.testing.wait_all_tasks_blocked()
    assert got == expected


async def test_iteration_ends_when_another_task_closes_the_socket():
    app = App()
    received = []

    @app.websocket("/stop")
    async def stop(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()
        go = trio.Event()

        async def closer():
            await go.wait()
            await ws.close(4000, "stopped")

        nursery.start_soon(closer)
        async for message in ws:
            received.append(message)
            go.set()
        received.append("loop ended")

    async with TestClient(app) as client, client.websocket("/stop") as ws:
        await ws.send("go")
        closed = await closed_with(ws)
    assert closed.code == 4000
    assert received[-1] == "loop ended"


async def test_async_with_accepts_on_enter_and_closes_on_exit():
    app = App()

    @app.websocket("/ctx")
    async def ctx(ws: WebSocket):
        async with ws:
            assert ws.connected
            await ws.send("inside")
        assert ws.closed

    async with TestClient(app) as client, client.websocket("/ctx") as ws:
        assert await ws.receive() == "inside"
        assert (await closed_with(ws)).code == 1000


# -- the close table ---------------------------------------------------------------------


async def test_handler_finishing_after_accept_closes_1000():
    app = App()

    @app.websocket("/done")
    async def done(ws: WebSocket):
        await ws.accept()

    async with TestClient(app) as client, client.websocket("/done") as ws:
        assert (await closed_with(ws)).code == 1000


async def test_unhandled_exception_after_accept_closes_1011_and_logs_once(caplog):
    app = App()

    @app.websocket("/boom")
    async def boom(ws: WebSocket):
        await ws.accept()
        raise ZeroDivisionError("kaboom")

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client, client.websocket("/boom") as ws:
            assert (await closed_with(ws)).code == 1011
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1
    assert records[0].name == "trioweb"
    assert isinstance(records[0].exc_info[1], ZeroDivisionError)


async def test_unhandled_exception_in_a_task_closes_1011(caplog):
    app = App()

    @app.websocket("/task-boom")
    async def task_boom(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def failing():
            raise KeyError("in a task")

        nursery.start_soon(failing)
        await trio.sleep_forever()

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client, client.websocket("/task-boom") as ws:
            assert (await closed_with(ws)).code == 1011
    assert [type(r.exc_info[1]) for r in caplog.records if r.exc_info] == [KeyError]


async def test_several_errors_are_all_logged_and_close_1011(caplog):
    app = App()

    @app.websocket("/two")
    async def two(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()
        both_running = trio.Event()
        count = 0

        async def failing(exc):
            nonlocal count
            count += 1
            if count == 2:
                both_running.set()
            await both_running.wait()
            raise exc

        # Shielded so that the first failure cannot cancel the second before it raises.
        async def shielded(exc):
            with trio.CancelScope(shield=True):
                await failing(exc)

        nursery.start_soon(shielded, KeyError("one"))
        nursery.start_soon(shielded, ValueError("two"))

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client, client.websocket("/two") as ws:
            assert (await closed_with(ws)).code == 1011
    logged = sorted(type(r.exc_info[1]).__name__ for r in caplog.records if r.exc_info)
    assert logged == ["KeyError", "ValueError"]


async def test_unhandled_exception_before_accept_is_http_500(caplog):
    app = App()

    @app.websocket("/early")
    async def early(ws: WebSocket):
        raise RuntimeError("before accept")

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client:
            with pytest.raises(WebSocketDenied) as denied:
                async with client.websocket("/early"):
                    pass
    assert denied.value.status_code == 500
    assert len([r for r in caplog.records if r.exc_info]) == 1


async def test_abort_before_accept_is_that_http_status_with_the_detail():
    app = App()

    @app.websocket("/private")
    async def private(ws: WebSocket):
        abort(401, "missing token", headers={"www-authenticate": "Bearer"})

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/private"):
                pass
    assert denied.value.status_code == 401
    assert denied.value.body == b"missing token"
    assert denied.value.headers["www-authenticate"] == "Bearer"


async def test_abort_after_accept_closes_1008_with_the_detail():
    app = App()

    @app.websocket("/later")
    async def later(ws: WebSocket):
        await ws.accept()
        raise HTTPException(403, "not in this room")

    async with TestClient(app) as client, client.websocket("/later") as ws:
        closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (1008, "not in this room")


async def test_close_before_accept_is_http_403():
    app = App()

    @app.websocket("/no")
    async def no(ws: WebSocket):
        await ws.close()

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/no"):
                pass
    assert denied.value.status_code == 403


@pytest.mark.parametrize("how", ["raise", "return"])
async def test_websocket_close_or_returning_before_accept_is_http_403(how):
    app = App()

    @app.websocket("/quiet")
    async def quiet(ws: WebSocket):
        if how == "raise":
            raise WebSocketClose(4000, "go away")

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/quiet"):
                pass
    assert denied.value.status_code == 403


async def test_websocket_close_raised_in_a_task_closes_with_its_code():
    app = App()

    @app.websocket("/raise")
    async def raising(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def task():
            raise WebSocketClose(4321, "from a task")

        nursery.start_soon(task)

    async with TestClient(app) as client, client.websocket("/raise") as ws:
        closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (4321, "from a task")


async def test_invalid_json_closes_1007():
    app = App()

    @app.websocket("/json")
    async def json_handler(ws: WebSocket):
        async for data in ws.iter_json():
            await ws.send_json(data)

    async with TestClient(app) as client, client.websocket("/json") as ws:
        await ws.send_json({"fine": True})
        assert await ws.receive_json() == {"fine": True}
        await ws.send("{not json")
        closed = await closed_with(ws)
    assert closed.code == 1007
    assert closed.reason.startswith("invalid JSON")


@pytest.mark.parametrize(("asked", "sent"), [("text", b"bytes"), ("bytes", "text")])
async def test_wrong_message_type_closes_1003(asked, sent):
    app = App()

    @app.websocket("/typed")
    async def typed(ws: WebSocket):
        if asked == "text":
            await ws.receive_text()
        else:
            await ws.receive_bytes()

    async with TestClient(app) as client, client.websocket("/typed") as ws:
        await ws.send(sent)
        assert (await closed_with(ws)).code == 1003


async def test_message_errors_can_be_caught_as_value_and_type_errors():
    app = App()

    @app.websocket("/catch")
    async def catch(ws: WebSocket):
        try:
            await ws.receive_json()
        except ValueError as exc:
            assert isinstance(exc, InvalidJSONMessage)
            await ws.send("bad json caught")
        try:
            await ws.receive_bytes()
        except TypeError as exc:
            assert isinstance(exc, UnexpectedMessageType)
            await ws.send("bad type caught")

    async with TestClient(app) as client, client.websocket("/catch") as ws:
        await ws.send("nope")
        assert await ws.receive() == "bad json caught"
        await ws.send("text, not bytes")
        assert await ws.receive() == "bad type caught"


async def test_exception_groups_can_be_caught_with_except_star():
    app = App()

    @app.websocket("/star")
    async def star(ws: WebSocket):
        await ws.accept()
        try:
            async with trio.open_nursery() as nursery:

                async def failing():
                    raise KeyError("inner")

                nursery.start_soon(failing)
        except* KeyError:
            await ws.send("caught")

    async with TestClient(app) as client, client.websocket("/star") as ws:
        assert await ws.receive() == "caught"
        assert (await closed_with(ws)).code == 1000


async def test_send_after_the_client_closed_raises_websocket_disconnect_in_hooks():
    app = App()
    errors = []

    @app.websocket("/gone")
    async def gone(ws: WebSocket):
        await ws.accept()
        await trio.sleep_forever()

    @app.after_websocket
    async def try_to_send(ws: WebSocket):
        for attempt in (ws.send("late"), ws.receive()):
            try:
                await attempt
            except WebSocketDisconnect as exc:
                errors.append(exc.code)

    async with TestClient(app) as client, client.websocket("/gone") as ws:
        await ws.close(4009)
    assert errors == [4009, 4009]
