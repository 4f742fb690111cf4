"""Liveness and readiness (``app.serve_health()``) over a real server: readiness turns 503 while
draining for shutdown, while a broker is down, and after a background task failed for good."""

from __future__ import annotations

import json

import trio
import trio.testing
from helpers import http_get, serving
from trio_websocket import open_websocket_url

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast
from trioweb.rooms import Rooms


async def probe(port: int, path: str = "/readyz") -> tuple[int, dict[str, object]]:
    status, headers, body = await http_get(port, path)
    assert headers["cache-control"] == "no-store"
    return status, json.loads(body)


async def test_liveness_and_readiness_of_a_serving_app():
    app = App()
    app.serve_health()
    async with serving(app) as server:
        assert await probe(server.port, "/healthz") == (200, {"status": "alive"})
        assert await probe(server.port) == (200, {"status": "ready"})


async def test_readiness_is_503_while_draining_for_shutdown():
    app = App()
    app.serve_health()
    release = trio.Event()
    ended = trio.Event()

    @app.websocket("/ws")
    async def hold(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive()

    @app.after_websocket
    async def slow_cleanup(ws: WebSocket) -> None:
        ended.set()
        await release.wait()  # the drain waits for this socket's end

    async with serving(app, graceful_timeout=10) as server:
        async with open_websocket_url(server.url("/ws")):
            assert (await probe(server.port))[0] == 200
            server.stop.set()  # shutdown, with this socket open
            with trio.fail_after(5):
                await ended.wait()
            status, body = await probe(server.port)
            alive = await probe(server.port, "/healthz")
            release.set()
    assert status == 503
    assert body == {"status": "unavailable", "reasons": ["draining: the server is shutting down"]}
    assert alive == (200, {"status": "alive"})  # still serving: only not for new clients


async def test_readiness_is_503_while_a_broker_is_down(redis_server):
    app = App()
    hub = app.use(Broadcast(redis_server.url))
    app.use(Rooms(hub))
    app.serve_health()
    async with serving(app) as server:
        assert await probe(server.port) == (200, {"status": "ready"})
        redis_server.stop()
        status, body = await probe(server.port)
        assert status == 503
        reasons = body["reasons"]
        assert isinstance(reasons, list)
        assert [r.split(":")[0] for r in reasons] == [
            "broadcast broker unreachable",
            "room store unreachable",
        ]
        redis_server.start()
        with trio.fail_after(15):
            for _ in range(75):  # polled: the clients reconnect on their own, in their time
                if (await probe(server.port))[0] == 200:
                    break
                await trio.sleep(0.2)
            else:
                raise AssertionError("readiness stayed 503 after the broker came back")


async def test_readiness_is_503_after_a_background_failure_until_the_task_runs_again():
    app = App()
    app.serve_health()
    fail = trio.Event()

    async def worker() -> None:
        await fail.wait()
        raise RuntimeError("worker broke")

    @app.on_startup
    async def start() -> None:
        app.nursery.start_soon(worker)

    async with serving(app) as server:
        assert (await probe(server.port))[0] == 200
        fail.set()
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        status, body = await probe(server.port)
        assert app.background_failures == 1
        fail = trio.Event()
        app.nursery.start_soon(worker)  # the app recovers: the same task runs again
        recovered = await probe(server.port)
        fail.set()
    assert status == 503
    (reason,) = body["reasons"]
    assert reason.startswith("background task failed and was not restarted: ")
    assert reason.endswith("worker")
    assert recovered == (200, {"status": "ready"})
