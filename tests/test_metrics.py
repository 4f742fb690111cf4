"""Prometheus metrics (``app.serve_metrics()``, ``trioweb run --metrics``) over a real server:
what an operator's scrape sees as sessions open, talk, close, get denied and overflow."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from helpers import http_get, serving
from metrics_app import make_app
from processes import free_port, reap, run_trioweb, start_cli, terminate
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast
from trioweb.rooms import Rooms

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """``/metrics``, parsed as Prometheus does: every sample by name and labels."""
    status, headers, body = await http_get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 if it is not there (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def settle() -> None:
    """Wait until the server has done all it can with what the client sent (loopback)."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


async def test_sessions_messages_and_close_codes_move_the_counters():
    app, _ = make_app()
    app.serve_metrics()
    room = "/ws/{room}"
    async with serving(app) as server:
        async with open_websocket_url(server.url("/ws/lot")) as ws:
            for message in ["a", "bb", "héé"]:  # 1 + 2 + 5 bytes, echoed
                await ws.send_message(message)
                assert await ws.get_message() == message
            live = await scrape(server.port)  # counted while the session is open
            await ws.aclose(4001, "bye")
        async with open_websocket_url(server.url("/boom")) as ws:
            await ws.send_message("go")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason.code == 1011
        await settle()
        after = await scrape(server.port)

    assert value(live, "trioweb_websocket_connections_open", route=room) == 1
    assert value(live, "trioweb_websocket_connections_total", route=room) == 1
    assert value(live, "trioweb_websocket_messages_total", route=room, direction="in") == 3
    assert value(live, "trioweb_websocket_messages_total", route=room, direction="out") == 3
    assert value(live, "trioweb_websocket_bytes_total", route=room, direction="in") == 8
    assert value(live, "trioweb_websocket_bytes_total", route=room, direction="out") == 8

    assert value(after, "trioweb_websocket_connections_open", route=room) == 0
    # Counted once: what the live scrape added is not added again at the session's end.
    assert value(after, "trioweb_websocket_messages_total", route=room, direction="in") == 3
    assert value(after, "trioweb_websocket_bytes_total", route=room, direction="out") == 8
    # The route's pattern, never the path: one series for every room.
    assert not [key for key in after if ("route", "/ws/lot") in key[1]]
    # The client's 4001, counted by its range
    # (test_close_codes_a_client_chooses_are_counted_by_range).
    assert value(after, "trioweb_websocket_closes_total", route=room, code="4xxx") == 1
    assert value(after, "trioweb_websocket_closes_total", route="/boom", code="1011") == 1
    assert value(after, "trioweb_websocket_session_seconds_count", route=room) == 1
    assert value(after, "trioweb_websocket_session_seconds_count", route="/boom") == 1
    assert value(after, "trioweb_websocket_messages_total", route="/boom", direction="in") == 1


async def test_denials_are_counted_by_route_and_status():
    app, _ = make_app()
    app.serve_metrics()
    async with serving(app) as server:
        for path, status in [("/nope", 404), ("/private", 403)]:
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(server.url(path)):
                    pass
            assert rejected.value.status_code == status
        origin = [("Origin", "https://elsewhere.example")]
        with pytest.raises(ConnectionRejected):
            async with open_websocket_url(server.url("/ws/a"), extra_headers=origin):
                pass
        async with open_websocket_url(server.url("/limited")):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(server.url("/limited")):
                    pass
            assert rejected.value.status_code == 503
        await settle()
        samples = await scrape(server.port)
    denied = "trioweb_websocket_handshakes_denied_total"
    assert value(samples, denied, route="<none>", status="404") == 1
    assert value(samples, denied, route="/private", status="403") == 1
    assert value(samples, denied, route="/ws/{room}", status="403") == 1
    assert value(samples, denied, route="/limited", status="503") == 1
    # Denied before accepting: no session, no close.
    assert value(samples, "trioweb_websocket_session_seconds_count", route="/private") == 0


async def test_overflows_inbox_and_hub_are_counted():
    app, hub = make_app()
    app.serve_metrics()
    async with serving(app) as server:
        async with open_websocket_url(server.url("/deaf")) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):  # bounded: the inbox holds 2
                    await ws.send_message("x")
                    with trio.move_on_after(0.01):
                        await ws.get_message()
            assert closed.value.reason.code == 1008
        async with (
            open_websocket_url(server.url("/subscribe/drop_newest")) as dropping,
            open_websocket_url(server.url("/subscribe/close")) as closing,
        ):
            assert await dropping.get_message() == "subscribed"
            assert await closing.get_message() == "subscribed"
            for n in range(5):  # each subscription holds 1 and reads none
                await hub.publish("news", str(n))
            samples = await scrape(server.port)  # both still subscribed
            await dropping.send_message("done")
            await closing.send_message("done")
        await settle()
        after = await scrape(server.port)
    assert value(samples, "trioweb_websocket_closes_total", route="/deaf", code="1008") == 1
    assert value(samples, "trioweb_broadcast_dropped_total", policy="drop_newest") == 4
    assert value(samples, "trioweb_broadcast_slow_closed_total") == 1
    # Counted once, however often it is read, and kept when the subscriptions are gone.
    assert value(after, "trioweb_broadcast_dropped_total", policy="drop_newest") == 4
    assert value(after, "trioweb_broadcast_slow_closed_total") == 1
    assert value(after, "trioweb_broadcast_dropped_total", policy="close") == 2


async def test_broker_up_gaps_and_rooms_over_redis(redis_server):
    app = App()
    hub = app.use(Broadcast(redis_server.url))
    rooms = app.use(Rooms(hub))
    metrics = app.serve_metrics()

    @app.websocket("/room/{name}")
    async def room(ws: WebSocket, name: str) -> None:
        async with rooms.join(name, user=str(id(ws))):
            await ws.accept()
            await ws.send("joined")
            await ws.receive()

    async with serving(app) as server:
        await metrics.probe()
        up = await scrape(server.port)
        async with (
            open_websocket_url(server.url("/room/a")) as a,
            open_websocket_url(server.url("/room/a")) as b,
            open_websocket_url(server.url("/room/b")) as c,
        ):
            for ws in (a, b, c):
                assert await ws.get_message() == "joined"
            members = await scrape(server.port)
            redis_server.stop()
            await metrics.probe()
            down = await scrape(server.port)
            redis_server.start()
            with trio.fail_after(15):
                while True:  # the hub reconnects on its own (retry_interval: 1 s)
                    await metrics.probe()
                    back = await scrape(server.port)
                    if value(back, "trioweb_broadcast_gaps_total") >= 1:
                        break
                    await trio.sleep(0.2)
            for ws in (a, b, c):
                await ws.send_message("bye")
    assert value(up, "trioweb_broker_up", broker="broadcast") == 1
    assert value(up, "trioweb_broker_up", broker="rooms") == 1
    assert value(up, "trioweb_broadcast_gaps_total") == 0
    assert value(members, "trioweb_room_members") == 3
    assert value(members, "trioweb_rooms_open") == 2
    assert value(down, "trioweb_broker_up", broker="broadcast") == 0
    assert value(down, "trioweb_broker_up", broker="rooms") == 0
    assert value(back, "trioweb_broker_up", broker="broadcast") == 1
    assert value(back, "trioweb_broker_up", broker="rooms") == 1


async def test_background_task_failures_are_counted():
    app, _ = make_app()
    app.serve_metrics()
    fail = trio.Event()

    async def doomed() -> None:
        await fail.wait()
        raise RuntimeError("doomed")

    @app.on_startup
    async def start() -> None:
        app.nursery.start_soon(doomed)

    async with serving(app) as server:
        before = await scrape(server.port)
        fail.set()
        await settle()
        after = await scrape(server.port)
    assert value(before, "trioweb_background_task_failures_total") == 0
    assert value(after, "trioweb_background_task_failures_total") == 1


async def test_metrics_off_by_default_serve_nothing_and_observe_nothing():
    app, _ = make_app()
    assert app.metrics is None
    assert app.connections.observer is None
    async with serving(app) as server:
        status, _, _ = await http_get(server.port, "/metrics")
    assert status == 404


# -- `trioweb run --workers 2 --metrics`: one scrape covers both ------------------------------


async def test_trioweb_run_metrics_and_health_in_one_process(tmp_path):
    process, port = await start_cli(
        "metrics_app:app", "--port", "0", "--metrics", "--health", "--no-access-log", tmp=tmp_path
    )
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/r") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            samples = await scrape(port)  # one process: the scrape itself adds the counts
        assert value(samples, "trioweb_websocket_messages_total", route="/ws/{room}",
                     direction="in") == 1  # fmt: skip
        assert (await http_get(port, "/readyz"))[0] == 200
        assert (await http_get(port, "/healthz"))[0] == 200
        assert await terminate(process) == 0
    finally:
        await reap(process)


#: ``trioweb run`` arguments: the metrics app on a free port, two workers, metrics on.
TWO_WORKERS_WITH_METRICS = (
    "metrics_app:app", "--port", "0", "--workers", "2", "--metrics", "--no-access-log",
)  # fmt: skip


@pytest.mark.long
async def test_one_scrape_covers_every_worker(tmp_path):
    process, port = await start_cli(*TWO_WORKERS_WITH_METRICS, tmp=tmp_path)
    try:
        pids: set[str] = set()
        sessions = 0
        with trio.fail_after(30):
            while len(pids) < 2 or sessions < 6:  # the kernel spreads them over both workers
                async with open_websocket_url(f"ws://127.0.0.1:{port}/whoami") as ws:
                    pids.add(await ws.get_message())
                    await ws.send_message("hi")
                    assert await ws.get_message() == "hi"
                    await ws.aclose(4001)
                sessions += 1
        route = "/whoami"
        with trio.fail_after(10):
            while True:  # each worker adds its counts within FLUSH_INTERVAL (1 s)
                samples = await scrape(port)
                messages = value(samples, "trioweb_websocket_messages_total", route=route,
                                 direction="in")  # fmt: skip
                closes = value(samples, "trioweb_websocket_closes_total", route=route, code="4xxx")
                if messages == sessions and closes == sessions:
                    break
                await trio.sleep(0.2)
        assert value(samples, "trioweb_websocket_connections_total", route=route) == sessions
        assert value(samples, "trioweb_websocket_connections_open", route=route) == 0
        assert await terminate(process) == 0
    finally:
        await reap(process)
    # The run's metrics directory is gone with it.
    assert not list(tmp_path.glob("trioweb-metrics-*"))


@pytest.mark.long
async def test_a_metrics_port_of_their_own_and_health_from_the_command_line(tmp_path):
    metrics_port = free_port()
    process, port = await start_cli(
        "metrics_app:app", "--port", "0", "--workers", "2", "--no-access-log",
        "--metrics-port", str(metrics_port), "--health", tmp=tmp_path,
    )  # fmt: skip
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/r") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
        status, _, _ = await http_get(port, "/metrics")
        assert status == 404  # not on the app's port
        assert (await http_get(port, "/readyz"))[0] == 200
        assert (await http_get(port, "/healthz"))[0] == 200
        with trio.fail_after(10):
            while True:  # the supervisor reads the workers' files; they flush every second
                samples = await scrape(metrics_port)
                if value(samples, "trioweb_websocket_closes_total", route="/ws/{room}",
                         code="1000") == 1:  # fmt: skip
                    break
                await trio.sleep(0.2)
        assert await terminate(process) == 0
    finally:
        await reap(process)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_metrics_port_in_use_gets_a_one_line_error(workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_trioweb(
            "run", "metrics_app:app", "--port", "0", "--workers", workers,
            "--metrics-port", str(port), timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"trioweb: error: --metrics-port: cannot serve on 127.0.0.1:{port}: "
        "the port is already in use"
    )
    assert "Traceback" not in result.stderr


async def test_the_metrics_port_answers_only_at_metrics(tmp_path):
    # A readiness probe pointed at the metrics port by mistake must fail, not get the metrics
    # with a 200 (prometheus-client's own server answers every path with them): it would keep
    # a draining process in rotation.
    metrics_port = free_port()
    process, port = await start_cli(
        "metrics_app:app", "--port", "0", "--metrics-port", str(metrics_port), "--health",
        "--no-access-log", tmp=tmp_path,
    )  # fmt: skip
    try:
        status, _, body = await http_get(metrics_port, "/metrics")
        assert status == 200
        assert "trioweb_websocket_connections_open" in body or "trioweb_broker_up" in body
        for path in ["/readyz", "/healthz", "/", "/metrics/x"]:
            assert (await http_get(metrics_port, path))[0] == 404, path
        assert (await http_get(port, "/readyz"))[0] == 200  # on the app's port, as documented
    finally:
        await reap(process)


async def test_close_codes_a_client_chooses_are_counted_by_range():
    # A client may close with any of the 2000 codes 3000-4999: counted one by one, a hostile
    # client would add 2000 series per route to every scrape. The app's own codes are its
    # choice, and bounded by its code: counted as they are. The session line keeps them all.
    app = App()
    app.serve_metrics()

    @app.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        message = await ws.receive()
        if message == "close with 4001":
            await ws.close(4001, "the app's own code")
        else:
            await ws.receive()

    async with serving(app) as server:
        for code in range(4000, 4010):
            async with open_websocket_url(server.url("/ws")) as ws:
                await ws.send_message("hold")
                await ws.aclose(code)
        async with open_websocket_url(server.url("/ws")) as ws:
            await ws.send_message("hold")
            await ws.aclose(3999)
        async with open_websocket_url(server.url("/ws")) as ws:
            await ws.send_message("hold")
            await ws.aclose(1000)
        async with open_websocket_url(server.url("/ws")) as ws:
            await ws.send_message("close with 4001")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 4001
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        samples = await scrape(server.port)
    closes = {
        dict(labels)["code"]: count
        for (name, labels), count in samples.items()
        if name == "trioweb_websocket_closes_total"
    }
    assert closes == {"4xxx": 10, "3xxx": 1, "1000": 1, "4001": 1}
