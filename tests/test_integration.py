"""Integration tests: trioweb served by a real hypercorn (trio worker) on loopback.

Every test starts ``trioweb.serve`` in-process on port 0, talks to it with trio-websocket over
real sockets, and shuts it down through its ``shutdown_trigger``. Nothing waits with a sleep:
the tests synchronise on messages received and on ``trio.Event``s set by the app under test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import helpers
import pytest
import trio
import trio_websocket
from helpers import HOST, Server
from trio_websocket import ConnectionClosed, ConnectionRejected

import trioweb

TEST_TIMEOUT = 10  # safety net around each test body: a bug fails the test, it hangs nothing
PROMPT = 1  # how soon a handler must notice a client that went away


@asynccontextmanager
async def serving(app: trioweb.App, **options: Any) -> AsyncIterator[Server]:
    """``helpers.serving``, with the whole block bounded by ``TEST_TIMEOUT``."""
    # A frozen run (a send loop that never yields) is caught by pytest-timeout instead.
    with trio.fail_after(TEST_TIMEOUT):
        async with helpers.serving(app, **options) as server:
            yield server


def connect(server: Server, path: str, **options: Any) -> Any:
    """A trio-websocket client for ``path`` (an async context manager)."""
    options.setdefault("connect_timeout", 2)
    options.setdefault("disconnect_timeout", 2)
    return trio_websocket.open_websocket_url(server.url(path), **options)


async def rejection(server: Server, path: str) -> ConnectionRejected:
    """Open ``path`` expecting the handshake to be refused; return the refusal."""
    with pytest.raises(ConnectionRejected) as caught:
        async with connect(server, path):
            pass
    return caught.value


async def closed_by_server(ws: trio_websocket.WebSocketConnection) -> trio_websocket.CloseReason:
    """Read until the server's close arrives; return its code and reason."""
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            await ws.get_message()
    return caught.value.reason


# -- messages and the handshake ---------------------------------------------------------------


async def test_echo_round_trips_text_and_bytes() -> None:
    app = trioweb.App()

    @app.websocket("/echo")
    async def echo(ws: trioweb.WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)

    async with serving(app) as server, connect(server, "/echo") as ws:
        await ws.send_message("héllo")
        assert await ws.get_message() == "héllo"
        await ws.send_message(b"\x00\xffbytes")
        assert await ws.get_message() == b"\x00\xffbytes"
        await ws.send_message("")
        assert await ws.get_message() == ""


async def test_one_serve_listens_on_several_addresses_with_bind() -> None:
    app = trioweb.App()

    @app.websocket("/echo")
    async def echo(ws: trioweb.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    stop = trio.Event()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                partial(
                    trioweb.serve,
                    app,
                    bind=[f"{HOST}:0", f"{HOST}:0"],
                    handle_signals=False,
                    shutdown_trigger=stop.wait,
                )
            )
            assert len(urls) == 2 and urls[0] != urls[1]
            for url in urls:
                async with trio_websocket.open_websocket_url(
                    url.replace("http://", "ws://") + "/echo"
                ) as ws:
                    await ws.send_message(url)
                    assert await ws.get_message() == url
            stop.set()


async def test_subprotocol_chosen_by_the_handler_reaches_the_client() -> None:
    app = trioweb.App()

    @app.websocket("/proto")
    async def proto(ws: trioweb.WebSocket) -> None:
        await ws.accept(subprotocol="b")
        await ws.send(",".join(ws.subprotocols))

    async with serving(app) as server, connect(server, "/proto", subprotocols=["a", "b"]) as ws:
        assert ws.subprotocol == "b"
        assert await ws.get_message() == "a,b"


async def test_path_params_are_converted() -> None:
    app = trioweb.App()

    @app.websocket("/rooms/{room}/{n:int}")
    async def room(ws: trioweb.WebSocket, room: str, n: int) -> None:
        async with ws:
            await ws.send(f"{room}:{n!r}")

    async with serving(app) as server:
        async with connect(server, "/rooms/lobby/42") as ws:
            assert await ws.get_message() == "lobby:42"  # an int: a str would read '42'
        assert (await rejection(server, "/rooms/lobby/forty-two")).status_code == 404


# -- denials: real HTTP responses to the handshake --------------------------------------------


async def test_abort_in_before_websocket_hook_denies_with_status_and_body() -> None:
    app = trioweb.App()
    handler_ran = False

    @app.before_websocket
    async def require_token(ws: trioweb.WebSocket) -> None:
        if ws.query_params.get("token") != "s3cret":
            trioweb.abort(401, "missing token")

    @app.websocket("/private")
    async def private(ws: trioweb.WebSocket) -> None:
        nonlocal handler_ran
        handler_ran = True
        async with ws:
            await ws.send("welcome")

    async with serving(app) as server:
        denied = await rejection(server, "/private")
        assert denied.status_code == 401
        assert denied.body == b"missing token"
        assert not handler_ran
        async with connect(server, "/private?token=s3cret") as ws:
            assert await ws.get_message() == "welcome"


async def test_reject_sends_status_headers_and_body() -> None:
    app = trioweb.App()

    @app.websocket("/teapot")
    async def teapot(ws: trioweb.WebSocket) -> None:
        await ws.reject(418, body=b"teapot", headers={"x-why": "tea"})

    async with serving(app) as server:
        denied = await rejection(server, "/teapot")
    assert denied.status_code == 418
    assert denied.body == b"teapot"
    assert (b"x-why", b"tea") in [(k.lower(), v) for k, v in denied.headers]


async def test_unknown_path_is_denied_with_404() -> None:
    app = trioweb.App()

    @app.websocket("/exists")
    async def exists(ws: trioweb.WebSocket) -> None:
        await ws.accept()

    async with serving(app) as server:
        assert (await rejection(server, "/nowhere")).status_code == 404


async def test_exception_before_accept_is_http_500() -> None:
    app = trioweb.App()

    @app.websocket("/broken")
    async def broken(ws: trioweb.WebSocket) -> None:
        raise RuntimeError("boom before accept")

    async with serving(app) as server:
        assert (await rejection(server, "/broken")).status_code == 500


# -- the close table, over the wire -----------------------------------------------------------


def close_table_app() -> trioweb.App:
    app = trioweb.App()

    @app.websocket("/raise")
    async def raise_after_accept(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        raise RuntimeError("boom")

    @app.websocket("/close-exception")
    async def close_exception(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        raise trioweb.WebSocketClose(4001, "nope")

    @app.websocket("/close-call")
    async def close_call(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        await ws.close(4002, "done")

    @app.websocket("/return")
    async def return_after_accept(ws: trioweb.WebSocket) -> None:
        await ws.accept()

    @app.websocket("/abort")
    async def abort_after_accept(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        trioweb.abort(403, "x")

    @app.websocket("/json")
    async def wants_json(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        await ws.receive_json()

    @app.websocket("/text")
    async def wants_text(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()

    return app


@pytest.mark.parametrize(
    ("path", "client_sends", "code", "reason"),
    [
        pytest.param("/raise", None, 1011, None, id="exception-1011"),
        pytest.param("/close-exception", None, 4001, "nope", id="WebSocketClose-4001"),
        pytest.param("/close-call", None, 4002, "done", id="close-4002"),
        pytest.param("/return", None, 1000, None, id="return-1000"),
        pytest.param("/abort", None, 1008, "x", id="abort-after-accept-1008"),
        pytest.param("/json", "{not json", 1007, None, id="invalid-json-1007"),
        pytest.param("/text", b"binary", 1003, None, id="binary-for-text-1003"),
    ],
)
async def test_close_code_follows_the_close_table(
    path: str, client_sends: str | bytes | None, code: int, reason: str | None
) -> None:
    async with serving(close_table_app()) as server, connect(server, path) as ws:
        if client_sends is not None:
            await ws.send_message(client_sends)
        closed = await closed_by_server(ws)
    assert closed.code == code
    if reason is not None:
        assert closed.reason == reason


async def test_inbox_overflow_closes_with_1008() -> None:
    app = trioweb.App()
    handler_finished = trio.Event()
    close_seen = trio.Event()
    after_close_code: list[int | None] = []

    @app.websocket("/slow", inbox_size=2)
    async def slow(ws: trioweb.WebSocket) -> None:
        try:
            await ws.accept()
            await trio.Event().wait()  # never reads
        finally:
            handler_finished.set()

    @app.after_websocket
    async def record(ws: trioweb.WebSocket) -> None:
        after_close_code.append(ws.close_code)
        close_seen.set()

    async with serving(app) as server, connect(server, "/slow") as ws:
        for i in range(50):
            try:
                await ws.send_message(f"message {i}")
            except ConnectionClosed:
                break  # the server's close already arrived; get_message() reports it below
        closed = await closed_by_server(ws)
        assert closed.code == 1008
        assert "inbox" in (closed.reason or "")
        with trio.fail_after(PROMPT):
            await handler_finished.wait()
            await close_seen.wait()
    assert after_close_code == [1008]


# -- a client that leaves cancels everything its connection started --------------------------


async def test_send_only_handler_is_cancelled_when_the_client_leaves() -> None:
    app = trioweb.App()
    finished = trio.Event()

    @app.websocket("/ticks")
    async def ticks(ws: trioweb.WebSocket) -> None:
        try:
            await ws.accept()
            while True:
                await ws.send("tick")
                await trio.sleep(0.01)  # the app's own pacing, not a test wait
        finally:
            finished.set()

    async with serving(app) as server:
        async with connect(server, "/ticks") as ws:
            assert await ws.get_message() == "tick"
        with trio.fail_after(PROMPT):
            await finished.wait()


def tight_sender_app(finished: trio.Event) -> trioweb.App:
    app = trioweb.App()

    @app.websocket("/flood")
    async def flood(ws: trioweb.WebSocket) -> None:
        try:
            await ws.accept()
            while True:
                await ws.send("x")  # no sleep: only the send's own checkpoint
        finally:
            finished.set()

    @app.websocket("/echo")
    async def echo(ws: trioweb.WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)

    return app


async def assert_still_serving(server: Server) -> None:
    async with connect(server, "/echo") as ws:
        await ws.send_message("still there?")
        assert await ws.get_message() == "still there?"


async def test_tight_send_loop_is_cancelled_on_clean_close_without_freezing() -> None:
    finished = trio.Event()
    async with serving(tight_sender_app(finished)) as server:
        async with connect(server, "/flood") as ws:
            for _ in range(100):
                assert await ws.get_message() == "x"
        with trio.fail_after(PROMPT):
            await finished.wait()
            await assert_still_serving(server)


async def test_tight_send_loop_is_cancelled_when_the_tcp_connection_drops() -> None:
    finished = trio.Event()
    async with serving(tight_sender_app(finished)) as server:
        async with trio.open_nursery() as nursery:
            stream = await trio.open_tcp_stream(HOST, server.port)
            ws = await trio_websocket.wrap_client_stream(nursery, stream, HOST, "/flood")
            for _ in range(100):
                assert await ws.get_message() == "x"
            await stream.aclose()  # no close frame: the peer just vanishes
            # trio-websocket's reader task may be waiting to queue a message nobody reads any
            # more (its queue holds one): it is the client's, and goes with the client.
            nursery.cancel_scope.cancel()
        with trio.fail_after(PROMPT):
            await finished.wait()
            await assert_still_serving(server)


async def test_handler_and_its_nursery_tasks_are_cancelled_when_the_client_leaves() -> None:
    app = trioweb.App()
    handler_finished = trio.Event()
    producer_finished = trio.Event()
    # A feed with one item and then nothing: past it, the producer and the handler both wait on
    # something other than the socket, so only the disconnect's cancellation can end them.
    feed_in, feed_out = trio.open_memory_channel[str](1)
    feed_in.send_nowait("tick")

    @app.websocket("/feed")
    async def feed(ws: trioweb.WebSocket, nursery: trio.Nursery) -> None:
        async def producer() -> None:
            try:
                async for item in feed_out:
                    await ws.send(item)
            finally:
                producer_finished.set()

        try:
            await ws.accept()
            nursery.start_soon(producer)
            await trio.sleep_forever()
        finally:
            handler_finished.set()

    async with serving(app) as server:
        async with connect(server, "/feed") as ws:
            assert await ws.get_message() == "tick"  # the producer is running
        with trio.fail_after(PROMPT):
            await handler_finished.wait()
            await producer_finished.wait()


async def test_close_code_seen_by_the_app_when_the_client_closes_cleanly() -> None:
    # hypercorn 0.18 alone reports a close started by the client as 1006 and drops the reason
    # (docs/hypercorn.md, fact 18); trioweb's stream passes the client's own code and reason.
    app = trioweb.App()
    recorded = trio.Event()
    seen: list[tuple[int | None, str | None]] = []

    @app.websocket("/wait")
    async def wait(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        await ws.send("ready")
        await trio.sleep_forever()

    @app.after_websocket
    async def record(ws: trioweb.WebSocket) -> None:
        seen.append((ws.close_code, ws.close_reason))
        recorded.set()

    async with serving(app) as server:
        async with connect(server, "/wait") as ws:
            assert await ws.get_message() == "ready"
            await ws.aclose(1000, "bye")
        with trio.fail_after(PROMPT):
            await recorded.wait()
    assert seen == [(1000, "bye")]


# -- graceful shutdown ------------------------------------------------------------------------


async def test_graceful_shutdown_closes_open_sockets_with_1001() -> None:
    app = trioweb.App()
    handler_finished = trio.Event()
    after_close_codes: list[int | None] = []

    @app.websocket("/stay")
    async def stay(ws: trioweb.WebSocket) -> None:
        try:
            await ws.accept()
            await ws.send("ready")
            await trio.sleep_forever()
        finally:
            handler_finished.set()

    @app.after_websocket
    async def record(ws: trioweb.WebSocket) -> None:
        after_close_codes.append(ws.close_code)

    async with serving(app, graceful_timeout=5) as server:
        async with connect(server, "/stay") as ws:
            assert await ws.get_message() == "ready"
            server.stop.set()
            closed = await closed_by_server(ws)
        assert (closed.code, closed.reason) == (1001, "server shutting down")
        with trio.fail_after(3):  # well under graceful_timeout: the drain ended it, not a timer
            await server.stopped.wait()
    assert handler_finished.is_set()
    assert after_close_codes == [1001]


async def test_new_handshakes_during_the_drain_get_503() -> None:
    app = trioweb.App()
    cleaning_up = trio.Event()
    release = trio.Event()

    @app.websocket("/slow-goodbye")
    async def slow_goodbye(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        await ws.send("ready")
        try:
            await trio.sleep_forever()
        finally:
            # Cleanup that takes a while keeps the drain open.
            cleaning_up.set()
            with trio.CancelScope(shield=True):
                await release.wait()

    async with serving(app, graceful_timeout=5) as server:
        async with connect(server, "/slow-goodbye") as ws:
            assert await ws.get_message() == "ready"
            server.stop.set()
            await cleaning_up.wait()
            denied = await rejection(server, "/slow-goodbye")
            assert denied.status_code == 503
            assert denied.body == b"server shutting down"
            release.set()
            assert (await closed_by_server(ws)).code == 1001
        with trio.fail_after(3):
            await server.stopped.wait()


# -- HTTP over the same server ----------------------------------------------------------------


async def test_http_get_returns_json() -> None:
    app = trioweb.App()

    @app.get("/health")
    async def health(request: trioweb.Request) -> trioweb.JSONResponse:
        return trioweb.JSONResponse({"ok": True})

    async with serving(app) as server:
        stream = await trio.open_tcp_stream(HOST, server.port)
        async with stream:
            await stream.send_all(
                b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            raw = b""
            while chunk := await stream.receive_some():
                raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    assert status_line.split(" ")[:2] == ["HTTP/1.1", "200"]
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"ok": True}
