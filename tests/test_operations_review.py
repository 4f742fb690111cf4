"""What an operator of `trioweb run --workers N --metrics --health` relies on beyond the happy path
(the review of issue 16): a supervisor killed outright takes its workers and its metrics
directory with it, and a run killed whole leaves its directory to the next run; a worker that
exits alone keeps what it counted; the metrics port answers only for the metrics; endpoints
never hide behind the app's routes; no client can grow the close-code series; bad values, a
missing multiprocess directory and a missing prometheus-client are one line and exit 2; stale
live gauges of dead processes do not count; one failed short job does not keep readiness down;
app.run() shows the session lines; and a vanished peer is dropped even while a send to it is
stalled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys

import pytest
import trio
import trio.lowlevel
import trio.testing
from helpers import http_get, serving
from test_hostile import HANDSHAKE
from test_metrics import ROOT, free_port, scrape, start_cli, value
from trio_websocket import ConnectionClosed, open_websocket_url

import trioweb
from trioweb import App, Request, WebSocket
from trioweb.server import dead_peer_timeout


def refuses(port: int) -> bool:
    """Whether nothing listens on ``port`` any more."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


@pytest.mark.long
async def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path):
    # kill -9 of the supervisor (an OOM kill, a process manager that only signals the main
    # pid): its workers must not go on serving unsupervised, holding the port that the
    # restarted service needs, and the run's metrics directory must not stay behind.
    process, port = await start_cli(
        "metrics_app:app", "--port", "0", "--workers", "2", "--metrics", "--no-access-log",
        "--graceful-timeout", "5", tmp=tmp_path,
    )  # fmt: skip
    workers = [pid for pid in children(process.pid) if pid_is_worker(pid)]
    try:
        assert len(workers) == 2
        assert list(tmp_path.glob("trioweb-metrics-*"))
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/r") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            process.send_signal(signal.SIGKILL)
            await process.wait()
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()  # the worker drains its socket, as on SIGTERM
            assert closed.value.reason.code == 1001
        with trio.fail_after(15):
            while True:  # polled: the workers exit in their own time
                if refuses(port) and not list(tmp_path.glob("trioweb-metrics-*")):
                    break
                await trio.sleep(0.1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        kill_all(workers)


@pytest.mark.long
async def test_a_run_killed_whole_leaves_its_metrics_directory_to_the_next_run(tmp_path):
    # kill -9 of every process of the run at once (a container's OOM kill, a cgroup's kill; the
    # workers have sessions of their own, so `kill -9 -PGID` of the supervisor's group is not
    # it): nobody of the run is left to remove its metrics directory, and /tmp would fill over
    # many crashes.
    # The next run removes it, and only it: not a directory of the operator's, not a live run's.
    run = ("metrics_app:app", "--port", "0", "--workers", "2", "--metrics", "--no-access-log")
    operators = tmp_path / "trioweb-metrics-mine"  # named alike, but no run made it
    operators.mkdir()
    killed, _ = await start_cli(*run, tmp=tmp_path, new_session=True)
    workers = [pid for pid in children(killed.pid) if pid_is_worker(pid)]
    (left,) = tmp_path.glob("trioweb-metrics-[0-9]*")
    assert left.name.startswith(f"trioweb-metrics-{killed.pid}-")
    for pid in (killed.pid, *workers):  # the workers before they notice their supervisor gone
        os.kill(pid, signal.SIGKILL)
    await killed.wait()
    with trio.fail_after(10):
        while True:  # polled: the workers are reaped by init in its own time
            if not any(running(pid) for pid in workers):
                break
            await trio.sleep(0.05)
    assert left.exists()  # nobody of that run was left to remove it
    later, port = await start_cli(*run, tmp=tmp_path, new_session=True)
    alive = None
    try:
        assert not left.exists()
        (current,) = tmp_path.glob("trioweb-metrics-[0-9]*")
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/r") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
        with trio.fail_after(10):
            while True:  # the worker adds its counts within a second
                samples = await scrape(port)
                if value(samples, "trioweb_websocket_messages_total", route="/ws/{room}",
                         direction="in") == 1:  # fmt: skip
                    break
                await trio.sleep(0.2)
        # A run that starts while this one lives leaves this one's directory alone.
        alive, _ = await start_cli(*run, tmp=tmp_path, new_session=True)
        assert current.exists()
        assert len(list(tmp_path.glob("trioweb-metrics-[0-9]*"))) == 2
        assert (await http_get(port, "/metrics"))[0] == 200  # its metrics are still served
    finally:
        for process in [later, alive]:
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(20):
                    await process.wait()
        kill_all(workers)
    assert operators.exists()  # the operator's own: never touched
    assert not list(tmp_path.glob("trioweb-metrics-[0-9]*"))  # both runs removed their own


def pid_is_worker(pid: int) -> bool:
    """Whether ``pid`` runs a spawned worker (not multiprocessing's resource tracker)."""
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return b"spawn_main" in file.read()


def running(pid: int) -> bool:
    """Whether process ``pid`` exists (reaped: its supervisor has seen it exit)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux), to clean up after a failed test."""
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(child) for child in file.read().split()]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


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
        process.kill()
        await process.wait()


@pytest.mark.parametrize(
    ("target", "flag", "path"),
    [
        ("clash_app:metrics", "--metrics", "/metrics"),
        ("clash_app:spa", "--metrics", "/metrics"),
        ("clash_app:spa", "--health", "/healthz"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_endpoint_the_app_already_serves_is_a_one_line_error(target, flag, path, workers):
    # Before, the app's route answered first and `--metrics` (or `--health`) silently served
    # the app's page: a scrape that fails to parse, a "healthy" SPA page.
    result = subprocess.run(
        [sys.executable, "-m", "trioweb", "run", target, "--port", "0", "--workers", workers,
         flag],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"trioweb: error: {flag}: GET {path} is already served by the app")


def test_serve_metrics_and_health_refuse_a_path_the_app_serves():
    app = App()

    @app.get("/{page:path}")
    async def index(request: object, page: str) -> None:
        """Every GET."""

    with pytest.raises(ValueError, match=r"GET /metrics is already served by the app"):
        app.serve_metrics()
    with pytest.raises(ValueError, match=r"GET /healthz is already served by the app"):
        app.serve_health()


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


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "99999"),
        ("--port", "-1"),
        ("--metrics-port", "99999"),
        ("--graceful-timeout", "nan"),
        ("--graceful-timeout", "-1"),
    ],
)
def test_a_bad_value_on_the_command_line_is_one_line_and_exit_2(option, value):
    # docs/deployment.md: exit 2 is "the command line: a bad value", which a process manager
    # must not restart on; these were exit 1, a traceback, or a traceback at shutdown.
    result = subprocess.run(
        [sys.executable, "-m", "trioweb", "run", "metrics_app:app", option, value],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"trioweb: error: {option} ")


@pytest.mark.long
async def test_live_gauges_of_dead_processes_in_the_users_directory_do_not_count(tmp_path):
    # A directory the operator sets (a volume that outlives the container: Kubernetes keeps an
    # emptyDir across restarts) still holds the files of the run before, if it was killed
    # outright (the OOM killer): nobody marked its processes dead, and their open sockets
    # would be summed into connections_open forever.
    directory = tmp_path / "multiproc"
    directory.mkdir()
    stale = await trio.run_process(
        [sys.executable, "-c", (
            "from prometheus_client import Gauge; "
            "Gauge('trioweb_websocket_connections_open', 'x', ['route'], "
            "multiprocess_mode='livesum').labels('/ws/{room}').set(5)"
        )],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )  # fmt: skip
    assert stale.returncode == 0 and list(directory.glob("gauge_livesum_*.db"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    try:
        process, port = await start_cli(
            "metrics_app:app", "--port", "0", "--workers", "2", "--metrics", "--no-access-log",
            tmp=tmp_path,
        )  # fmt: skip
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/r") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            with trio.fail_after(10):
                while True:  # the worker adds its counts within a second
                    samples = await scrape(port)
                    if value(samples, "trioweb_websocket_messages_total", route="/ws/{room}",
                             direction="in") == 1:  # fmt: skip
                        break
                    await trio.sleep(0.2)
        assert value(samples, "trioweb_websocket_connections_open", route="/ws/{room}") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await process.wait()
    assert directory.exists()  # the operator's own: kept


async def test_a_vanished_peer_the_server_is_sending_to_is_dropped_within_the_bound(monkeypatch):
    # A blackholed peer ACKs nothing: the server's sends fill its socket buffer and block (a
    # peer that stops reading does the same, on loopback). The dead-peer check must still drop
    # it within two ping intervals of its last byte, whatever the handler is blocked in (here:
    # a send that cannot complete). The blackhole tests of test_hostile.py send nothing, so
    # their Pings always go out.
    interval = 0.5
    monkeypatch.setitem(trioweb.serve.__kwdefaults__, "ping_interval", interval)
    bound = dead_peer_timeout(interval)
    app = App()
    ended = trio.Event()
    codes: list[int | None] = []

    @app.websocket("/echo")
    async def flood(ws: WebSocket) -> None:
        await ws.accept()
        chunk = "x" * 65536
        for _ in range(10_000):  # far more than any socket buffer holds
            await ws.send(chunk)

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        codes.append(ws.close_code)
        ended.set()

    with trio.fail_after(bound + 4):
        async with serving(app) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            async with stream:
                await stream.send_all(HANDSHAKE)
                last_byte_sent = trio.current_time()
                await ended.wait()  # nothing is read: the server's sends block
                detected = trio.current_time() - last_byte_sent
    assert codes == [1006]
    assert detected <= bound + 1.0, detected


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
        process.kill()
        await process.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_multiprocess_directory_that_does_not_exist_is_one_line(tmp_path, workers):
    # PROMETHEUS_MULTIPROC_DIR set to a path that is not there (a volume not mounted): it was a
    # traceback from prometheus-client (in every worker).
    missing = tmp_path / "not-mounted"
    result = subprocess.run(
        [sys.executable, "-m", "trioweb", "run", "clash_app:spa", "--port", "0",
         "--workers", workers, "--metrics-port", str(free_port())],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
             "PROMETHEUS_MULTIPROC_DIR": str(missing)},
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == f"trioweb: error: PROMETHEUS_MULTIPROC_DIR={missing} is not a directory"


@pytest.mark.long
async def test_a_worker_that_exits_keeps_what_it_counted(tmp_path):
    # One worker stopped on its own (SIGTERM to it alone): the other serves on, and a scrape
    # still has every session the gone worker counted, while its open sockets are gone.
    process, port = await start_cli(
        "metrics_app:app", "--port", "0", "--workers", "2", "--metrics", "--no-access-log",
        tmp=tmp_path,
    )  # fmt: skip
    try:
        held: dict[str, object] = {}
        sessions = 0
        async with trio.open_nursery() as nursery:
            stop = trio.Event()

            async def hold(pid_seen: trio.Event) -> None:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/whoami") as ws:
                    pid = await ws.get_message()
                    fresh = pid not in held
                    held.setdefault(pid, ws)
                    pid_seen.set()
                    if fresh:
                        with contextlib.suppress(ConnectionClosed):
                            await stop.wait()
                            await ws.get_message()

            with trio.fail_after(30):
                while len(held) < 2:  # the kernel spreads the sockets over both workers
                    seen = trio.Event()
                    nursery.start_soon(hold, seen)
                    await seen.wait()
                    sessions += 1
            gone = int(next(iter(held)))
            os.kill(gone, signal.SIGTERM)  # its held socket is drained with 1001
            with trio.fail_after(20):
                while True:  # polled: the worker drains, exits, and is marked dead
                    samples = await scrape(port)
                    still_open = value(samples, "trioweb_websocket_connections_open",
                                       route="/whoami")  # fmt: skip
                    total = value(samples, "trioweb_websocket_connections_total", route="/whoami")
                    if still_open == 1 and total == sessions and not running(gone):
                        break
                    await trio.sleep(0.2)
            samples = await scrape(port)  # surely by the worker left, the other one gone
            assert value(samples, "trioweb_websocket_connections_total", route="/whoami") == (
                sessions
            )
            assert value(samples, "trioweb_websocket_connections_open", route="/whoami") == 1
            assert value(samples, "trioweb_websocket_closes_total", route="/whoami",
                         code="1001") == 1  # fmt: skip
            assert process.returncode is None  # the run goes on with one worker
            stop.set()
            nursery.cancel_scope.cancel()
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await process.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("flag", [["--metrics"], ["--metrics-port", "9"]])
def test_metrics_without_prometheus_client_is_one_line(workers, flag):
    # `pip install trioweb` without the [metrics] extra: a traceback from deep inside before.
    # (prometheus-client is hidden from this process as if it were not installed.)
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from trioweb.cli import main; "
        f"sys.exit(main(['run', 'metrics_app:app', '--port', '0', '--workers', '{workers}', "
        f"*{flag!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == (
        f"trioweb: error: {flag[0]} needs prometheus-client: pip install 'trioweb[metrics]'"
    )


async def test_app_run_shows_the_session_lines_and_the_drain():
    # `python app.py` ending in app.run(): the session line (the first ask) and the
    # drain summary were INFO lines on an unconfigured logger, so nothing was shown at all.
    port = free_port()
    code = f"from session_log_app import app; app.run(port={port})"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(20):
            while True:  # polled: the server starts in its own time
                if not refuses(port):
                    break
                await trio.sleep(0.1)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/lot") as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                await ws.aclose(4001, "bye")
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = stderr.decode()
    assert "session /ws/{room} path=/ws/lot" in text and "code=4001" in text, text
    assert "drained in" in text, text
