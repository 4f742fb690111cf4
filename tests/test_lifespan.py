"""Lifespan: startup and shutdown hooks, the lifespan context manager, and app.nursery."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from trioweb import App, Request, serve
from trioweb.broadcast import Broadcast
from trioweb.testing import TestClient


async def test_startup_and_shutdown_hooks_run_in_order():
    events = []

    @asynccontextmanager
    async def lifespan(app: App):
        events.append("lifespan enter")
        yield
        events.append("lifespan exit")

    app = App(lifespan=lifespan)

    @app.on_startup
    async def first():
        events.append("startup")

    @app.on_shutdown
    async def last():
        events.append("shutdown")

    @app.get("/")
    async def index(request: Request):
        events.append("request")
        return "ok"

    async with TestClient(app) as client:
        await client.get("/")
    assert events == ["startup", "lifespan enter", "request", "lifespan exit", "shutdown"]


async def test_app_nursery_runs_background_tasks_until_shutdown():
    app = App()
    ticks = []
    cancelled = trio.Event()
    ticked = trio.Event()

    @app.on_startup
    async def start_ticker():
        async def ticker():
            try:
                while True:
                    ticks.append(len(ticks))
                    ticked.set()
                    await trio.sleep(1)
            finally:
                cancelled.set()

        app.nursery.start_soon(ticker)

    @app.get("/ticks")
    async def get_ticks(request: Request):
        return {"ticks": len(ticks)}

    async with TestClient(app) as client:
        await ticked.wait()
        assert (await client.get("/ticks")).json()["ticks"] >= 1
        assert not cancelled.is_set()
    assert cancelled.is_set()


async def test_background_tasks_are_cancelled_before_the_shutdown_hooks():
    app = App()
    order = []

    @app.on_startup
    async def start():
        async def task():
            try:
                await trio.sleep_forever()
            finally:
                order.append("task cancelled")

        app.nursery.start_soon(task)

    @app.on_shutdown
    async def stop():
        order.append("shutdown hook")

    async with TestClient(app):
        pass
    assert order == ["task cancelled", "shutdown hook"]


def test_app_nursery_outside_the_lifespan_is_a_clear_error():
    with pytest.raises(RuntimeError, match="only open while the app runs"):
        App().nursery  # noqa: B018


async def test_failing_startup_stops_with_the_error(caplog):
    app = App()
    handled = []

    @app.on_startup
    async def broken():
        raise ConnectionError("database unreachable")

    @app.get("/")
    async def index(request: Request):
        handled.append(request)

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        with pytest.raises(RuntimeError, match="database unreachable"):
            async with TestClient(app):
                pass
    assert [type(r.exc_info[1]) for r in caplog.records if r.exc_info] == [ConnectionError]


async def test_failing_background_task_is_logged_and_reported_at_shutdown(caplog):
    app = App()
    failed = trio.Event()

    @app.on_startup
    async def start():
        async def crashing():
            try:
                raise ValueError("background bug")
            finally:
                failed.set()

        app.nursery.start_soon(crashing)

    @app.get("/")
    async def index(request: Request):
        return "still serving"

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        with pytest.raises(RuntimeError, match="background bug"):
            async with TestClient(app) as client:
                await failed.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert (await client.get("/")).text == "still serving"
    assert any("background task" in r.getMessage() for r in caplog.records)


async def test_failing_shutdown_hook_is_reported_and_the_others_still_run():
    app = App()
    ran = []

    @app.on_shutdown
    async def broken():
        raise OSError("flush failed")

    @app.on_shutdown
    async def other():
        ran.append("other")

    with pytest.raises(RuntimeError, match="flush failed"):
        async with TestClient(app):
            pass
    assert ran == ["other"]


async def test_lifespan_state_is_reset_by_a_new_startup():
    """A module-level app served twice (two test clients) accepts handshakes both times."""
    app = App()

    @app.websocket("/ws")
    async def ws_handler(ws):
        await ws.send("hi")

    for _ in range(2):
        async with TestClient(app) as client, client.websocket("/ws") as ws:
            assert await ws.receive() == "hi"
        await app.connections.shut_down_all(0)  # what serve() does at shutdown


async def test_serve_cancelled_from_outside_still_unwinds_the_lifespan_and_extensions():

    exited = []

    @asynccontextmanager
    async def lifespan(app: App):
        try:
            yield
        finally:
            exited.append("lifespan")

    app = App(lifespan=lifespan)
    hub = app.use(Broadcast())  # holds a nursery of the lifespan task
    with trio.move_on_after(5):  # a safety net; the cancel below comes first
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, port=0, handle_signals=False))
            async with hub.subscribe("t") as sub:
                await hub.publish("t", "up")
                assert await sub.receive() == "up"
            nursery.cancel_scope.cancel()  # not a graceful stop: serve() is cancelled
    assert exited == ["lifespan"]
    with pytest.raises(RuntimeError, match="not running"):
        await hub.publish("t", "down")


async def test_an_app_runs_in_one_server_or_test_client_at_a_time():
    app = App()
    hub = app.use(Broadcast())
    async with TestClient(app):
        # A second lifespan would share the first one's connections, app.nursery and hub.
        with pytest.raises(RuntimeError, match="already running"):
            async with TestClient(app):
                pass
        with pytest.raises(RuntimeError, match="already running"):
            await serve(app, port=0, handle_signals=False)
        async with hub.subscribe("t") as sub:  # the first one is untouched
            await hub.publish("t", "still up")
            assert await sub.receive() == "still up"
    async with TestClient(app):  # and once it has stopped, the app can run again
        pass


async def test_an_extension_whose_task_fails_while_serving_ends_alone(caplog):
    # An extension's context manager with a nursery of its own (as the broadcast hub has): its
    # task failing must not cancel the lifespan under the app, which would skip the shutdown
    # hooks and leave the server serving with no lifespan at all.
    app = App()
    crash = trio.Event()
    calls: list[str] = []

    class Flaky:
        @asynccontextmanager
        async def lifespan(self, app: App) -> AsyncIterator[None]:
            async def worker() -> None:
                await crash.wait()
                raise ValueError("the extension's task broke")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker)
                yield
                nursery.cancel_scope.cancel()

    app.use(Flaky())

    @app.on_shutdown
    async def shutdown() -> None:
        calls.append("shutdown hook")

    @app.get("/ping")
    async def ping(request: Request) -> str:
        return "pong"

    with pytest.raises(RuntimeError, match="app shutdown failed: ValueError: the extension's"):
        async with TestClient(app) as client:
            crash.set()
            await trio.testing.wait_all_tasks_blocked()
            assert (await client.get("/ping")).text == "pong"  # the app goes on serving
    assert calls == ["shutdown hook"]
    logged = [
        r for r in caplog.records if "extension failed while the app was serving" in r.message
    ]
    assert len(logged) == 1 and logged[0].exc_info is not None
