"""Races and edge cases of the runtime found in review; each asserts the contract."""

from __future__ import annotations

import logging
import math
from typing import Any

import trio
import trio.testing
from helpers import closed_with

from trioweb import App, Request, WebSocket, WebSocketDisconnect
from trioweb.testing import TestClient, WebSocketClosed


def recording(app: App, sent: list[dict[str, Any]], gate: dict[str, trio.Event] | None = None):
    """An ASGI wrapper that records what the app sends on WebSocket scopes.

    With ``gate``, the app's ``websocket.accept`` is held (as a server's send may be, while it
    writes the 101 response) until ``gate["release"]`` is set; ``gate["in_flight"]`` says it is.
    Like hypercorn's send, the hold is shielded from cancellation.
    """

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return

        async def recording_send(message: dict[str, Any]) -> None:
            sent.append(message)
            if gate is not None and message["type"] == "websocket.accept":
                with trio.CancelScope(shield=True):
                    gate["in_flight"].set()
                    await gate["release"].wait()
                    await send(message)
                return
            await send(message)

        await app(scope, receive, recording_send)

    return wrapped


# -- 1. the inbox accepts messages again after the app's own close -------------------------


async def test_receive_after_the_apps_close_raises_even_if_the_client_sent_more():
    app = App()
    closed = trio.Event()
    client_sent = trio.Event()
    outcome: list[object] = []

    @app.websocket("/late")
    async def late(ws: WebSocket):
        await ws.accept()
        await ws.close(4000, "bye")
        closed.set()
        await client_sent.wait()
        try:
            outcome.append(await ws.receive())
        except WebSocketDisconnect as exc:
            outcome.append(("disconnect", exc.code))

    async with TestClient(app) as client, client.websocket("/late") as ws:
        await closed.wait()
        # The client has not read the close yet: its message crosses the app's close frame.
        await ws.send("crossing the close")
        await trio.testing.wait_all_tasks_blocked()
        client_sent.set()
        assert (await closed_with(ws)).code == 4000
    assert outcome == [("disconnect", 4000)]


# -- 2. an uncaught WebSocketDisconnect in one task cancels the handler ---------------------


async def test_uncaught_disconnect_in_a_task_does_not_cancel_the_handlers_code_after_close(
    autojump_clock,
):
    app = App()
    steps: list[str] = []

    @app.websocket("/work-after-close")
    async def handler(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()
        closed = trio.Event()

        async def late_sender():
            await closed.wait()
            await ws.send("too late")  # WebSocketDisconnect: must end this task only

        nursery.start_soon(late_sender)
        await ws.close(4002, "bye")
        closed.set()
        await trio.sleep(5)  # work after the close, e.g. persisting the session
        steps.append("work after close finished")

    async with TestClient(app, receive_timeout=60) as client:
        async with client.websocket("/work-after-close") as ws:
            assert (await closed_with(ws)).code == 4002
    assert steps == ["work after close finished"]


# -- 3. accept() overwrites a close (app's or client's) that happened during its send -------


async def test_close_during_an_accept_in_flight_sends_nothing_after_the_close():
    app = App()
    sent: list[dict[str, Any]] = []
    gate = {"in_flight": trio.Event(), "release": trio.Event()}
    sender_done = trio.Event()

    @app.websocket("/race")
    async def race(ws: WebSocket, nursery: trio.Nursery):
        async def sender():
            try:
                await ws.send("hello")  # accepts implicitly
            except WebSocketDisconnect:
                pass
            finally:
                sender_done.set()

        nursery.start_soon(sender)
        await gate["in_flight"].wait()
        await ws.close(4000, "go away")  # while the implicit accept is being sent

    async def release_when_blocked():
        await gate["in_flight"].wait()
        await trio.testing.wait_all_tasks_blocked()
        gate["release"].set()

    async with TestClient(recording(app, sent, gate)) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_when_blocked)
            try:
                async with client.websocket("/race") as ws:
                    # A real client answers the close only after a network round trip.
                    await sender_done.wait()
                    await closed_with(ws)
            except Exception:
                pass  # a 403 would be just as right; what matters is what the app sent
    kinds = [m["type"] for m in sent]
    first_close = kinds.index("websocket.close")
    assert kinds[first_close + 1 :] == [], f"frames sent after the close: {sent}"


async def test_client_disconnect_during_an_accept_in_flight_keeps_the_clients_code():
    app = App()
    sent: list[dict[str, Any]] = []
    gate = {"in_flight": trio.Event(), "release": trio.Event()}
    seen: list[tuple[int | None, bool]] = []

    @app.websocket("/gone")
    async def gone(ws: WebSocket):
        await ws.accept()
        await ws.send("hello")

    @app.after_websocket
    async def record(ws: WebSocket):
        seen.append((ws.close_code, ws.closed))

    wrapped = recording(app, sent, gate)
    to_app, app_inbox = trio.open_memory_channel[dict[str, Any]](10)
    out_send, _out_receive = trio.open_memory_channel[dict[str, Any]](math.inf)
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/gone",
        "raw_path": b"/gone",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
        "extensions": {"websocket.http.response": {}},
    }
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await to_app.send({"type": "websocket.connect"})
            nursery.start_soon(wrapped, scope, app_inbox.receive, out_send.send)
            await gate["in_flight"].wait()
            # The client drops the TCP connection while the 101 is being written.
            await to_app.send({"type": "websocket.disconnect", "code": 1006})
            await trio.testing.wait_all_tasks_blocked()
            gate["release"].set()
    assert seen == [(1006, True)]
    assert [m["type"] for m in sent] == ["websocket.accept"], sent


# -- 4. the drain returns at once once any earlier connection has ended ---------------------


async def test_shutdown_drain_waits_for_open_connections_after_an_earlier_one_ended():
    app = App()
    holding = trio.Event()
    release = trio.Event()

    @app.websocket("/quick")
    async def quick(ws: WebSocket):
        await ws.accept()

    @app.websocket("/hold")
    async def hold(ws: WebSocket):
        await ws.accept()
        try:
            holding.set()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await release.wait()  # cleanup that takes a while

    drained = trio.Event()

    async def drain():
        # What serve() runs on SIGINT/SIGTERM or its shutdown trigger.
        await app.connections.shut_down_all(10)
        drained.set()

    async with TestClient(app) as client:
        async with client.websocket("/quick") as ws:
            await closed_with(ws)
        async with client.websocket("/hold") as ws, trio.open_nursery() as nursery:
            await holding.wait()
            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            still_waiting = not drained.is_set()
            release.set()
            closed = await closed_with(ws)
            await drained.wait()
    assert closed.code == 1001
    assert still_waiting, "shut_down_all returned while a connection was still open"


# -- 5. `async with ws` left by an exception that the handler catches ----------------------


async def test_async_with_ws_closes_on_exit_by_exception_even_if_the_handler_catches_it(
    autojump_clock,
):
    app = App()
    ticks = 0

    @app.websocket("/caught")
    async def caught(ws: WebSocket, nursery: trio.Nursery):
        async def producer():
            nonlocal ticks
            while True:
                await ws.send("tick")
                ticks += 1
                await trio.sleep(1)

        try:
            async with ws:
                nursery.start_soon(producer)
                await ws.receive()
                raise ValueError("bad command")
        except ValueError:
            pass  # the block has ended: the socket must be closed, the producer cancelled

    async with TestClient(app, receive_timeout=60) as client:
        async with client.websocket("/caught") as ws:
            await ws.send("command")
            received: list[str | bytes] = []
            closed: WebSocketClosed | None = None
            try:
                while len(received) < 5:
                    received.append(await ws.receive())
            except WebSocketClosed as exc:
                closed = exc
    # At most the tick sent before the block ended; then the close, not more ticks.
    assert closed is not None, f"still open after `async with ws` ended: {received}"
    assert len(received) <= 1, f"still sending after `async with ws` ended: {received}"


# -- 6. HTTP: an error handled in a group hides the other, unhandled errors -----------------


async def test_http_unhandled_errors_next_to_a_handled_one_are_still_logged(caplog):
    app = App()
    both_started = trio.Event()

    @app.errorhandler(KeyError)
    async def missing(request: Request, exc: KeyError):
        return {"error": "missing"}, 404

    @app.get("/two-errors")
    async def two_errors(request: Request):
        async def fail_with(exc: Exception):
            await both_started.wait()
            raise exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_with, KeyError("k"))
            nursery.start_soon(fail_with, ValueError("the bug nobody will see"))
            await trio.testing.wait_all_tasks_blocked()
            both_started.set()

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client:
            await client.get("/two-errors")
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(isinstance(e, ValueError) for e in logged), "the ValueError vanished without a trace"
