"""Liveness and readiness (``app.serve_health()``) over a real server: readiness turns 503 while
draining for shutdown, while a broker is down (one PING per broker however many probes, the
broker named in trioweb's words, the client's error logged), and after a background task
failed for good."""

from __future__ import annotations

import json
import logging
import math
import re

import trio
import trio.lowlevel
import trio.testing
from conftest import RedisServer
from helpers import http_get, serving
from processes import reap, start_cli
from trio_websocket import open_websocket_url

from trioweb import App, Request, WebSocket
from trioweb._broker_checks import FRESH_FOR
from trioweb.broadcast import Broadcast
from trioweb.rooms import Rooms


async def probe(port: int, path: str = "/readyz") -> tuple[int, dict[str, object]]:
    status, headers, body = await http_get(port, path)
    assert headers["cache-control"] == "no-store"
    return status, json.loads(body)


#: Readiness probes sent at once (a load balancer's, several of them, or anyone's).
PROBES = 50


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


def bulk_complete(reply: bytes) -> bool:
    """Whether ``reply`` holds a whole RESP bulk string: ``$LENGTH``, CRLF, the text, CRLF."""
    header, crlf, _ = reply.partition(b"\r\n")
    return bool(crlf) and len(reply) >= len(header) + 2 + int(header[1:]) + 2


async def redis_pings(redis_server: RedisServer) -> int:
    """How many PINGs the redis-server has answered so far, by its own count."""
    stream = await trio.open_unix_socket(str(redis_server.socket))
    async with stream:
        await stream.send_all(b"INFO commandstats\r\n")
        reply = b""
        with trio.fail_after(5):
            while not bulk_complete(reply):
                chunk = await stream.receive_some()
                assert chunk, "redis-server closed the connection"
                reply += chunk
    found = re.search(rb"cmdstat_ping:calls=(\d+)", reply)
    return 0 if found is None else int(found.group(1))


async def test_concurrent_readiness_probes_share_one_ping_per_broker(redis_server):
    app = App()
    hub = app.use(Broadcast(redis_server.url))
    app.use(Rooms(hub))
    app.serve_health()
    async with serving(app) as server:
        before = await redis_pings(redis_server)  # no probe yet: nothing to reuse
        started = trio.current_time()
        answers: list[tuple[int, dict[str, object]]] = []

        async def one() -> None:
            answers.append(await probe(server.port))

        async with trio.open_nursery() as nursery:
            for _ in range(PROBES):
                nursery.start_soon(one)
        elapsed = trio.current_time() - started
        pings = await redis_pings(redis_server) - before
    assert answers == [(200, {"status": "ready"})] * PROBES
    # Two brokers (the hub's, the rooms' store), at most one check each per FRESH_FOR window
    # the burst touched: a PING per request would be 2 * PROBES.
    windows = math.ceil(elapsed / FRESH_FOR) + 1
    print(f"{PROBES} concurrent probes in {elapsed:.2f} s: {pings} PINGs")
    assert pings <= 2 * windows, (pings, elapsed)


async def test_readiness_names_the_broker_down_and_logs_the_detail(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="trioweb")
    app = App()
    hub = app.use(Broadcast(redis_server.url))
    app.use(Rooms(hub))
    app.serve_health()
    down = [
        "broker down: the broadcast hub's broker does not answer",
        "broker down: the rooms' broker does not answer",
    ]
    async with serving(app) as server:
        assert await probe(server.port) == (200, {"status": "ready"})
        redis_server.stop()
        with trio.fail_after(5):
            while True:  # polled: the last answer may be reused for up to FRESH_FOR
                status, body = await probe(server.port)
                if status == 503:
                    break
                await trio.sleep(0.1)
        assert body == {"status": "unavailable", "reasons": down}
        again = await probe(server.port)
        redis_server.start()
        restarted = trio.current_time()
        with trio.fail_after(15):
            for _ in range(150):  # polled: the clients reconnect on their own, in their time
                if (await probe(server.port))[0] == 200:
                    break
                await trio.sleep(0.1)
            else:
                raise AssertionError("readiness stayed 503 after the broker came back")
        print(f"ready again {trio.current_time() - restarted:.2f} s after the restart")
    assert again == (503, {"status": "unavailable", "reasons": down})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("readiness:")]
    # Once per change of state, however many probes there were.
    warnings = [line for line in lines if "does not answer: " in line]
    assert sorted(line.split(" does not answer: ")[0] for line in warnings) == [
        "readiness: the broadcast hub's broker",
        "readiness: the rooms' broker",
    ]
    assert sorted(line for line in lines if line.endswith("answers again")) == [
        "readiness: the broadcast hub's broker answers again",
        "readiness: the rooms' broker answers again",
    ]
    for line in warnings:  # the client's own error is in the log, never in the answer
        detail = line.split(" does not answer: ")[1]
        assert detail and detail not in json.dumps(body)


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


async def test_a_one_off_task_that_failed_once_does_not_keep_readiness_down():
    # Fire-and-forget jobs (an e-mail per sign-up) run under one name, briefly. One failed: the
    # next one of that name that starts is the app doing that work again, so it has recovered.
    # Before, readiness was 503 whenever no job of that name happened to be running at the
    # instant of the probe: one failed e-mail took the process out of rotation for good, and a
    # fleet whose processes each had one, out of service.
    app = App()
    app.serve_health()
    done = trio.Event()

    async def send_email(fail: bool) -> None:
        await trio.lowlevel.checkpoint()
        if fail:
            raise RuntimeError("SMTP said no")
        done.set()

    @app.get("/signup")
    async def signup(request: Request) -> dict[str, str]:
        app.nursery.start_soon(send_email, request.query_params.get("fail") == "1")
        return {"status": "ok"}

    async with serving(app) as server:
        assert (await http_get(server.port, "/signup?fail=1"))[0] == 200
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert app.background_failures == 1
        failed = await http_get(server.port, "/readyz")
        assert (await http_get(server.port, "/signup"))[0] == 200
        with trio.fail_after(5):
            await done.wait()
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        recovered = await http_get(server.port, "/readyz")
    assert failed[0] == 503  # until the app does that work again
    assert recovered[0] == 200, recovered


async def test_health_in_code_and_on_the_command_line_is_served_once(tmp_path):
    # `--health` on an app that already calls serve_health() is not a clash: it is the same
    # endpoint, asked for twice (as `--metrics` on an App(metrics=True)).
    process, port = await start_cli(
        "clash_app:own_health", "--port", "0", "--health", "--no-access-log", tmp=tmp_path
    )
    try:
        assert (await http_get(port, "/readyz"))[0] == 200
        assert (await http_get(port, "/healthz"))[0] == 200
    finally:
        await reap(process)
