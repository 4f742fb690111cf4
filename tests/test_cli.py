"""`trioweb run`: clear errors for bad targets, and a real server that stops cleanly."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from processes import ROOT, announced_url, open_trioweb, read_to_end, reap, terminate
from trio_websocket import ConnectionClosed, open_websocket_url

import trioweb


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioweb", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module:app", "cannot import module 'no_such_module': not found"),
        ("examples.echo:missing", "module 'examples.echo' has no attribute 'missing'"),
        ("examples.echo:App", "examples.echo:App is a type, not a trioweb App"),
        (":app", "no module in ':app' (expected MODULE:APP, e.g. examples.echo:app)"),
    ],
)
def test_bad_targets_get_a_one_line_error(target, message):
    result = run_cli("run", target)
    assert result.returncode == 2
    assert result.stderr == f"trioweb: error: {message}\n"
    assert "Traceback" not in result.stderr


def test_a_module_failing_at_import_gets_a_one_line_error(tmp_path):
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('config missing')\n")
    result = run_cli("run", "broken_app:app", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "trioweb: error: importing 'broken_app' failed: RuntimeError: config missing\n"
    )


async def start(*args: str, env: dict[str, str] | None = None) -> tuple[trio.Process, str]:
    """Start `trioweb run` and return the process and the URL it announces on stdout."""
    process = await open_trioweb(
        "run", *args, env={**os.environ, **(env or {})}, stderr=subprocess.DEVNULL
    )
    url, _, _ = await announced_url(process)
    return process, url


@pytest.mark.parametrize(
    ("workers", "stop_signal"), [(1, signal.SIGINT), (1, signal.SIGTERM), (2, signal.SIGTERM)]
)
async def test_run_serves_and_a_signal_closes_sockets_with_1001(workers, stop_signal):
    process, url = await start("examples.echo:app", "--port", "0", "--workers", str(workers))
    try:
        ws_url = url.replace("http://", "ws://") + "/ws"
        async with open_websocket_url(ws_url) as ws:
            await ws.send_message("over the wire")
            assert await ws.get_message() == "over the wire"
            process.send_signal(stop_signal)
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(20):
                await ws.get_message()
        assert closed.value.reason.code == 1001
        assert closed.value.reason.reason == "server shutting down"
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        await reap(process)


def test_a_failing_startup_stops_with_a_one_line_error(tmp_path):
    (tmp_path / "failing_app.py").write_text(
        "from trioweb import App\n"
        "app = App()\n"
        "@app.on_startup\n"
        "async def connect():\n"
        "    raise ConnectionError('database unreachable')\n"
    )
    result = run_cli("run", "failing_app:app", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "serving" not in result.stdout
    # One line, no traceback (--traceback adds it: test_startup.py), no "Running on".
    assert result.stderr == (
        "trioweb: error: app startup failed: ConnectionError: database unreachable\n"
    )


async def test_serve_raises_startup_error_when_startup_fails():
    app = trioweb.App()

    @app.on_startup
    async def connect():
        raise ConnectionError("database unreachable")

    with pytest.raises(trioweb.StartupError, match="ConnectionError: database unreachable"):
        await trioweb.serve(app, port=0, handle_signals=False)


def test_app_run_serves_until_a_signal():
    code = "from examples.echo import app; app.run(port=0)"
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in process.stderr:  # hypercorn logs "Running on http://..." once it listens
            if "Running on http://" in line:
                break
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()


async def test_chat_with_two_workers_shares_rooms_through_redis(redis_server):
    """`--workers 2` plus Redis: every member of a room sees and hears every other, whichever
    worker serves it."""
    process, url = await start(
        "examples.chat:app",
        "--port",
        "0",
        "--workers",
        "2",
        env={"TRIOWEB_BROADCAST_URL": redis_server.url},
    )
    try:
        ws_url = url.replace("http://", "ws://") + "/ws/lobby?name="
        async with contextlib.AsyncExitStack() as stack:
            members = []
            for n in range(6):  # the kernel spreads them over both workers
                ws = await stack.enter_async_context(open_websocket_url(ws_url + f"m{n}"))
                members.append(ws)
                # Everyone present sees m{n} in the room's presence (shared through Redis),
                # the newcomer in its welcome; lists may be merged, so read until it shows.
                for member in members:
                    with trio.fail_after(20):
                        while f"m{n}" not in json.loads(await member.get_message())["names"]:
                            pass
            await members[0].send_message(json.dumps({"text": "hello all"}))
            for member in members:
                with trio.fail_after(20):
                    while (said := json.loads(await member.get_message()))["type"] != "message":
                        assert said["type"] == "presence", said
                    assert said["text"] == "hello all"
        assert await terminate(process) == 0
    finally:
        await reap(process)


def test_routes_lists_every_route():
    result = run_cli("routes", "examples.chat:app")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "GET,HEAD  /trioweb.js  trioweb.serve_client",
        "GET,HEAD  /            examples.chat.app.page",
        "WS        /ws/{room}   examples.chat.app.chat",
    ]
    assert run_cli("routes", "nowhere:app").stderr.startswith("trioweb: error: cannot import")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_gets_a_one_line_error(workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "examples.echo:app", "--port", str(port), "--workers", workers)
    assert result.returncode == 1
    assert result.stderr.endswith(
        f"trioweb: error: cannot serve on 127.0.0.1:{port}: the port is already in use\n"
    )
    assert "Traceback" not in result.stderr


def test_missing_redis_gets_a_one_line_error():
    result = subprocess.run(
        [sys.executable, "-m", "trioweb", "run", "examples.chat:app", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TRIOWEB_BROADCAST_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "trioweb: error: app startup failed: BrokerUnavailable: "
        "cannot reach the broker at redis://127.0.0.1:1/0"
    )


async def test_the_access_log_shows_each_request_and_handshake():
    process, url = await start("examples.echo:app", "--port", "0")
    try:
        async with open_websocket_url(url.replace("http://", "ws://") + "/ws") as ws:
            await ws.send_message("logged")
            assert await ws.get_message() == "logged"
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            output = await read_to_end(process.stdout)  # the access log is on stdout
            await process.wait()
        log = output.decode()
    finally:
        await reap(process)
    handshake = next(line for line in log.splitlines() if '"GET /ws 1.1"' in line)
    assert re.search(r'"GET /ws 1\.1" 101 - [0-9.]+s$', handshake), handshake
