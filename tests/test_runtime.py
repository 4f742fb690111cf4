"""The connection runtime: a socket is a nursery, and a disconnect cancels all of it."""

import logging

import pytest
import trio
import trio.testing
from helpers import closed_with

from trioweb import App, WebSocket, WebSocketDisconnect, abort
from trioweb.testing import TestClient, WebSocketDenied


async def test_client_disconnect_cancels_the_handler_and_every_task():
    app = App()
    cleaned = []
    started = trio.Event()

    @app.websocket("/tasks")
    async def tasks(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def producer():
            try:
                while True:
                    await ws.send("tick")
                    await trio.sleep(0.01)
            finally:
                cleaned.append("producer")

        async def idle():
            try:
                started.set()
                await trio.sleep_forever()
            finally:
                cleaned.append("idle")

        nursery.start_soon(producer)
        nursery.start_soon(idle)
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append("handler")

    async with TestClient(app) as client, client.websocket("/tasks") as ws:
        await started.wait()
        assert await ws.receive() == "tick"
        await ws.close(1000)
    # Leaving the block waited for the handler: every finally has run.
    assert sorted(cleaned) == ["handler", "idle", "producer"]


async def test_a_send_only_handler_learns_of_the_disconnect():
    app = App()
    finished = trio.Event()

    @app.websocket("/firehose")
    async def firehose(ws: WebSocket):
        await ws.accept()
        try:
            # The test client's send returns without yielding, like hypercorn's once the peer
            # is gone: only because every send is a checkpoint does this loop not spin forever.
            while True:
                await ws.send("x")
        finally:
            finished.set()

    async with TestClient(app) as client, client.websocket("/firehose") as ws:
        for _ in range(3):
            assert await ws.receive() == "x"
    assert finished.is_set()


async def test_a_handler_may_return_and_leave_its_tasks_running():
    app = App()

    @app.websocket("/later")
    async def later(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def producer():
            for n in range(3):
                await ws.send(str(n))

        nursery.start_soon(producer)
        # returns at once: the connection lives until the producer is done, then closes 1000

    async with TestClient(app) as client, client.websocket("/later") as ws:
        assert [await ws.receive() for _ in range(3)] == ["0", "1", "2"]
        assert (await closed_with(ws)).code == 1000


async def test_a_handler_returning_with_the_socket_closed_cancels_its_tasks():
    app = App()
    cancelled = trio.Event()

    @app.websocket("/closed")
    async def closed(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def lingering():
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

        nursery.start_soon(lingering)
        await ws.close(4000, "done")

    async with TestClient(app) as client, client.websocket("/closed") as ws:
        assert (await closed_with(ws)).code == 4000
    assert cancelled.is_set()


async def test_a_task_closing_after_the_handler_returned_cancels_the_rest():
    app = App()
    cancelled = trio.Event()

    @app.websocket("/task-close")
    async def task_close(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def closer():
            await ws.receive()
            await ws.close(4001)

        async def lingering():
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

        nursery.start_soon(closer)
        nursery.start_soon(lingering)

    async with TestClient(app) as client, client.websocket("/task-close") as ws:
        await ws.send("close please")
        assert (await closed_with(ws)).code == 4001
    assert cancelled.is_set()


async def test_code_after_close_runs_normally(autojump_clock):
    app = App()
    steps = []

    @app.websocket("/after-close")
    async def after_close(ws: WebSocket):
        await ws.accept()
        await ws.close()
        # The client's answer to our close arrives meanwhile: it must cancel nothing.
        await trio.sleep(10)
        steps.append("still running after close")

    async with TestClient(app, receive_timeout=60) as client:
        async with client.websocket("/after-close") as ws:
            assert (await closed_with(ws)).code == 1000
    assert steps == ["still running after close"]


async def test_other_tasks_touching_a_closed_socket_end_quietly(caplog):
    app = App()
    seen = []

    @app.websocket("/quiet")
    async def quiet(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()
        closed = trio.Event()

        async def late_sender():
            await closed.wait()
            try:
                await ws.send("too late")
            except WebSocketDisconnect as exc:
                seen.append(exc.code)
                raise

        nursery.start_soon(late_sender)
        await ws.close(4002, "bye")
        closed.set()
        # Returning now would cancel late_sender before it sends: wait until it has ended.
        while nursery.child_tasks:
            await trio.testing.wait_all_tasks_blocked()

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client, client.websocket("/quiet") as ws:
            closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (4002, "bye")
    assert seen == [4002]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_uncaught_disconnect_in_the_handler_is_not_an_error(caplog):
    app = App()

    @app.websocket("/reader")
    async def reader(ws: WebSocket):
        await ws.accept()
        await ws.close()
        await ws.receive()  # raises WebSocketDisconnect, uncaught

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client, client.websocket("/reader") as ws:
            assert (await closed_with(ws)).code == 1000
    assert not caplog.records


async def test_inbox_overflow_closes_1008_without_stalling_the_reader():
    app = App()
    handler_cancelled = trio.Event()

    @app.websocket("/slow", inbox_size=2)
    async def slow(ws: WebSocket):
        await ws.accept()
        try:
            await trio.sleep_forever()  # never reads
        finally:
            handler_cancelled.set()

    async with TestClient(app) as client, client.websocket("/slow") as ws:
        for n in range(3):
            await ws.send(str(n))
        closed = await closed_with(ws)
    assert closed.code == 1008
    assert "inbox" in closed.reason and "2" in closed.reason
    assert handler_cancelled.is_set()


async def test_inbox_bound_defaults_to_the_apps():
    app = App(inbox_size=1)

    @app.websocket("/tiny")
    async def tiny(ws: WebSocket):
        await ws.accept()
        await trio.sleep_forever()

    async with TestClient(app) as client, client.websocket("/tiny") as ws:
        await ws.send("a")
        await ws.send("b")
        assert (await closed_with(ws)).code == 1008


def test_inbox_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        App(inbox_size=0)
    with pytest.raises(ValueError, match="at least 1"):
        App().websocket("/x", inbox_size=0)


async def test_concurrent_senders_never_interleave_and_keep_their_order():
    app = App()

    @app.websocket("/many")
    async def many(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def sender(task_id: int):
            for n in range(50):
                await ws.send_json({"task": task_id, "n": n, "pad": "x" * task_id})

        for task_id in range(10):
            nursery.start_soon(sender, task_id)

    received = {task_id: [] for task_id in range(10)}
    async with TestClient(app) as client, client.websocket("/many") as ws:
        for _ in range(500):
            message = await ws.receive_json()
            assert message["pad"] == "x" * message["task"]
            received[message["task"]].append(message["n"])
        assert (await closed_with(ws)).code == 1000
    assert all(numbers == list(range(50)) for numbers in received.values())


async def test_senders_take_turns_rather_than_one_starving_the_others():
    app = App()

    @app.websocket("/fair")
    async def fair(ws: WebSocket, nursery: trio.Nursery):
        await ws.accept()

        async def sender(name: str):
            for _ in range(20):
                await ws.send(name)

        nursery.start_soon(sender, "a")
        nursery.start_soon(sender, "b")

    async with TestClient(app) as client, client.websocket("/fair") as ws:
        first_twenty = [await ws.receive() for _ in range(20)]
    assert set(first_twenty) == {"a", "b"}


async def test_messages_sent_before_a_disconnect_are_received_in_order():
    app = App()
    got = []

    @app.websocket("/order")
    async def order(ws: WebSocket):
        async for message in ws:
            got.append(message)
            await ws.send("ack")

    async with TestClient(app) as client, client.websocket("/order") as ws:
        for n in range(20):
            await ws.send(str(n))
            assert await ws.receive() == "ack"
    assert got == [str(n) for n in range(20)]


# -- hooks and error handlers ------------------------------------------------------------


async def test_before_websocket_hook_can_deny_with_a_real_status():
    app = App()
    handler_ran = False

    @app.before_websocket
    async def require_token(ws: WebSocket):
        if ws.query_params.get("token") != "s3cret":
            abort(401, "missing or bad token")

    @app.websocket("/secure")
    async def secure(ws: WebSocket):
        nonlocal handler_ran
        handler_ran = True
        await ws.send("welcome")

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/secure?token=wrong"):
                pass
        assert not handler_ran
        async with client.websocket("/secure?token=s3cret") as ws:
            assert await ws.receive() == "welcome"
    assert denied.value.status_code == 401
    assert denied.value.body == b"missing or bad token"


async def test_before_websocket_hook_may_accept_or_close():
    app = App()

    @app.before_websocket
    async def gate(ws: WebSocket):
        if ws.path == "/closed-by-hook":
            await ws.close()
        else:
            await ws.accept(subprotocol=ws.subprotocols[0] if ws.subprotocols else None)

    @app.websocket("/{name}")
    async def handler(ws: WebSocket, name: str):
        await ws.send(f"{name} connected={ws.connected}")

    async with TestClient(app) as client:
        async with client.websocket("/open", subprotocols=["p"]) as ws:
            assert ws.subprotocol == "p"
            assert await ws.receive() == "open connected=True"
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/closed-by-hook"):
                pass
    assert denied.value.status_code == 403


async def test_after_websocket_hooks_see_the_close_code():
    app = App()
    codes = []

    @app.websocket("/{how}")
    async def handler(ws: WebSocket, how: str):
        await ws.accept()
        if how == "error":
            raise RuntimeError("boom")
        if how == "close":
            await ws.close(4003)
        if how == "wait":
            await trio.sleep_forever()

    @app.after_websocket
    async def record(ws: WebSocket):
        codes.append((ws.path, ws.close_code))

    async with TestClient(app) as client:
        for how in ("done", "error", "close"):
            async with client.websocket(f"/{how}") as ws:
                await closed_with(ws)
        async with client.websocket("/wait") as ws:
            await ws.close(4999)
    assert codes == [("/done", 1000), ("/error", 1011), ("/close", 4003), ("/wait", 4999)]


async def test_after_websocket_hooks_run_under_a_time_limit(autojump_clock, caplog):
    app = App(after_hook_timeout=2.0)
    steps = []

    @app.websocket("/x")
    async def handler(ws: WebSocket):
        await ws.accept()

    @app.after_websocket
    async def stuck(ws: WebSocket):
        steps.append("started")
        await trio.sleep(3600)
        steps.append("never")

    with caplog.at_level(logging.WARNING, logger="trioweb"):
        start = trio.current_time()
        async with TestClient(app, receive_timeout=60) as client, client.websocket("/x") as ws:
            await closed_with(ws)
    assert steps == ["started"]
    assert trio.current_time() - start == pytest.approx(2.0)
    assert any("after_websocket hooks" in r.getMessage() for r in caplog.records)


async def test_a_failing_after_hook_is_logged_and_the_next_still_runs(caplog):
    app = App()
    ran = []

    @app.websocket("/x")
    async def handler(ws: WebSocket):
        await ws.accept()

    @app.after_websocket
    async def failing(ws: WebSocket):
        raise ValueError("hook bug")

    @app.after_websocket
    async def second(ws: WebSocket):
        ran.append(ws.close_code)

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client, client.websocket("/x") as ws:
            await closed_with(ws)
    assert ran == [1000]
    assert [type(r.exc_info[1]) for r in caplog.records if r.exc_info] == [ValueError]


class NotAllowed(Exception):
    pass


async def test_errorhandler_can_turn_an_error_into_a_denial_response(caplog):
    app = App()

    @app.errorhandler(NotAllowed)
    async def not_allowed(target, exc):
        from trioweb import PlainTextResponse

        return PlainTextResponse(f"denied: {exc}", 451)

    @app.websocket("/x")
    async def handler(ws: WebSocket):
        raise NotAllowed("region")

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client:
            with pytest.raises(WebSocketDenied) as denied:
                async with client.websocket("/x"):
                    pass
    assert (denied.value.status_code, denied.value.body) == (451, b"denied: region")
    assert not caplog.records  # a handled error is not logged


async def test_errorhandler_can_close_with_its_own_code_after_accept():
    app = App()
    handled = []

    @app.errorhandler(LookupError)
    async def lookup(ws, exc):
        handled.append(type(exc).__name__)
        await ws.close(4404, "no such thing")

    @app.websocket("/x")
    async def handler(ws: WebSocket):
        await ws.accept()
        raise KeyError("thing")  # a subclass of LookupError

    async with TestClient(app) as client, client.websocket("/x") as ws:
        closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (4404, "no such thing")
    assert handled == ["KeyError"]


async def test_client_leaving_before_accept_cancels_the_hooks():
    app = App()
    cancelled = trio.Event()
    in_hook = trio.Event()

    @app.before_websocket
    async def slow_auth(ws: WebSocket):
        in_hook.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    @app.websocket("/x")
    async def handler(ws: WebSocket):
        pass

    sent = []
    to_app, from_client = trio.open_memory_channel(10)

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/x", "headers": [], "subprotocols": []}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, from_client.receive, send)
        await to_app.send({"type": "websocket.connect"})
        await in_hook.wait()
        await to_app.send({"type": "websocket.disconnect", "code": 1006})
    assert cancelled.is_set()
    assert sent == []  # nobody to answer
