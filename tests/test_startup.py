"""A server that cannot start says so in one line, exits non-zero, and never claims to run.

Every failure a person causes is tried as they would, with `trioweb run` (one worker and two)
and with `trioweb.serve()` from code: an import error, a missing app attribute, a port in use,
an address that is not this machine's, a port out of range, a startup hook that raises, a
broker (the hub's, the rooms' store) down at startup, and TLS files that do not load.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
import trio
from processes import ROOT, announced_url, open_trioweb, read_all, read_to_end, reap
from trio_websocket import ConnectionClosed, open_websocket_url

import trioweb
from trioweb.broadcast import Broadcast
from trioweb.rooms import Rooms

#: The lines a server prints once it is up: hypercorn's and trioweb's.
RUNNING = ("Running on", "serving")

APPS = {
    "hook_fails": (
        "from trioweb import App\n"
        "app = App()\n"
        "@app.on_startup\n"
        "async def connect():\n"
        "    raise ConnectionError('database unreachable')\n"
    ),
    "hub_down": (
        "from trioweb import App\n"
        "from trioweb.broadcast import Broadcast\n"
        "app = App()\n"
        "app.use(Broadcast('redis://127.0.0.1:1'))\n"
    ),
    "store_down": (
        "from trioweb import App\n"
        "from trioweb.broadcast import Broadcast\n"
        "from trioweb.rooms import Rooms\n"
        "app = App()\n"
        "app.use(Rooms(Broadcast('redis://127.0.0.1:1')))\n"
    ),
    "import_fails": "raise RuntimeError('config missing')\n",
    "no_app": "application = None\n",
    "fine": "from trioweb import App\napp = App()\n",
    "background_fails": (
        "from trioweb import App\n"
        "app = App(background_failure='exit')\n"
        "async def fails():\n"
        "    raise ConnectionError('broker gone')\n"
        "@app.on_startup\n"
        "async def start():\n"
        "    app.nursery.start_soon(fails)\n"
    ),
}


def run_among_apps(tmp_path: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end in ``tmp_path``, where every app of APPS is a module."""
    for name, source in APPS.items():
        (tmp_path / f"{name}.py").write_text(source)
    return subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`trioweb run ARGS` among the apps of APPS."""
    return run_among_apps(tmp_path, [sys.executable, "-m", "trioweb", "run", *args])


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, line: str) -> None:
    """Exactly ``line`` on stderr, exit ``status``, and no line saying the server runs."""
    assert (result.returncode, result.stderr) == (status, line + "\n")
    for running in RUNNING:
        assert running not in result.stdout + result.stderr


# Two workers are two more processes to start: in the long suite.
WORKERS = pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.long)])


@WORKERS
@pytest.mark.parametrize(
    ("target", "status", "line"),
    [
        (
            "import_fails:app",
            2,
            "trioweb: error: importing 'import_fails' failed: RuntimeError: config missing",
        ),
        ("no_app", 2, "trioweb: error: module 'no_app' has no attribute 'app'"),
        (
            "hook_fails:app",
            1,
            "trioweb: error: app startup failed: ConnectionError: database unreachable",
        ),
        (
            "hub_down:app",
            1,
            "trioweb: error: app startup failed: BrokerUnavailable: "
            "cannot reach the broker at redis://127.0.0.1:1 (Connection refused)",
        ),
        (
            "store_down:app",
            1,
            "trioweb: error: app startup failed: BrokerUnavailable: "
            "cannot reach the room store at redis://127.0.0.1:1 (Connection refused)",
        ),
    ],
)
def test_an_app_that_cannot_start_gets_one_line(tmp_path, workers, target, status, line):
    # With two workers, both fail alike: the supervisor says it once.
    assert_one_line(run_cli(tmp_path, target, "--port", "0", "--workers", workers), status, line)


@WORKERS
def test_a_port_in_use_gets_one_line_before_the_app_starts(tmp_path, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The hook that would fail never runs: the address is checked first.
        result = run_cli(tmp_path, "hook_fails:app", "--port", str(port), "--workers", workers)
    assert_one_line(
        result, 1, f"trioweb: error: cannot serve on 127.0.0.1:{port}: the port is already in use"
    )


@WORKERS
@pytest.mark.parametrize(
    ("address", "line"),
    [
        # TEST-NET-1 (RFC 5737): never an address of this machine
        (["--host", "192.0.2.1", "--port", "0"], "192.0.2.1:0: Cannot assign requested address"),
        # (--port 70000 is a bad value of the command line: exit 2, before any bind;
        # test_cli_errors.py::test_a_bad_value_on_the_command_line_is_one_line_and_exit_2)
    ],
)
def test_a_bad_address_gets_one_line(tmp_path, workers, address, line):
    result = run_cli(tmp_path, "fine:app", *address, "--workers", workers)
    assert_one_line(result, 1, f"trioweb: error: cannot serve on {line}")


@WORKERS
def test_traceback_prints_the_cause_after_the_line(tmp_path, workers):
    result = run_cli(tmp_path, "hook_fails:app", "--port", "0", "--traceback", "--workers", workers)
    assert_line_then_traceback(result)
    assert "Running on" not in result.stderr


def assert_line_then_traceback(result: subprocess.CompletedProcess[str]) -> None:
    """Exit 1, the one line for hook_fails' startup, then the cause's one traceback, which
    shows the user's own frame."""
    assert result.returncode == 1
    first, *rest = result.stderr.splitlines()
    assert first == "trioweb: error: app startup failed: ConnectionError: database unreachable"
    assert rest[0] == "Traceback (most recent call last):"
    assert 'hook_fails.py", line 5, in connect' in result.stderr  # the user's own frame
    assert rest[-1] == "ConnectionError: database unreachable"
    assert result.stderr.count("Traceback") == 1


# -- app.run(): a `python app.py` gets what `trioweb run` prints --------------------------------


def run_app(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c "from MODULE import app; app.run(ARGS)"`` among the apps of APPS."""
    code = f"from {module} import app; app.run({', '.join(args)})"
    return run_among_apps(tmp_path, [sys.executable, "-c", code])


def test_app_run_on_a_port_in_use_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_app(tmp_path, "hook_fails", f"port={port}")
    assert_one_line(
        result, 1, f"trioweb: error: cannot serve on 127.0.0.1:{port}: the port is already in use"
    )


def test_app_run_with_a_failing_startup_is_one_line_and_exit_1(tmp_path):
    result = run_app(tmp_path, "hook_fails", "port=0")
    assert_one_line(
        result, 1, "trioweb: error: app startup failed: ConnectionError: database unreachable"
    )


def test_app_run_ends_with_one_line_and_exit_1_when_a_background_task_fails(tmp_path):
    # As trioweb run under background_failure="exit": the task's traceback was logged when it
    # failed (once), the server drained, and the last line says why the process stops.
    result = run_app(tmp_path, "background_fails", "port=0")
    assert result.returncode == 1
    assert result.stderr.count("Traceback") == 1
    assert result.stderr.endswith(
        "trioweb: error: a background task in app.nursery failed: ConnectionError: broker gone\n"
    )


def test_app_run_with_traceback_prints_the_cause_after_the_line(tmp_path):
    result = run_app(tmp_path, "hook_fails", "port=0", "traceback=True")
    assert_line_then_traceback(result)


# -- serve() from code ---------------------------------------------------------------------


def app_with_hook(ran: list[str]) -> trioweb.App:
    app = trioweb.App()

    @app.on_startup
    async def started() -> None:
        ran.append("startup")

    return app


async def test_serve_raises_one_startup_error_chained_to_the_cause(capfd):
    app = trioweb.App()
    bug = KeyError("settings")

    @app.on_startup
    async def connect() -> None:
        raise bug

    with pytest.raises(trioweb.StartupError) as raised:
        await trioweb.serve(app, port=0, handle_signals=False)
    assert str(raised.value) == "app startup failed: KeyError: 'settings'"
    assert raised.value.__cause__ is bug  # the traceback of the user's hook is there
    # Nothing printed: no "Running on", no traceback (the exception carries it).
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


async def test_serve_raises_startup_error_for_a_broker_down(capfd):
    app = trioweb.App()
    hub = app.use(Broadcast("redis://127.0.0.1:1"))
    app.use(Rooms(hub))
    with pytest.raises(trioweb.StartupError, match=r"at redis://127.0.0.1:1 \(Connection refused"):
        await trioweb.serve(app, port=0, handle_signals=False)
    assert capfd.readouterr() == ("", "")


async def test_serve_checks_the_address_and_tls_files_before_the_app_starts(tmp_path):
    ran: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(trioweb.StartupError, match="the port is already in use") as raised:
            await trioweb.serve(app_with_hook(ran), port=port, handle_signals=False)
    assert isinstance(raised.value.__cause__, OSError)
    missing = tmp_path / "missing.pem"
    with pytest.raises(trioweb.StartupError) as raised:
        await trioweb.serve(app_with_hook(ran), port=0, certfile=str(missing), keyfile=str(missing))
    assert str(raised.value) == (
        f"cannot load the TLS certificate {missing} (key {missing}): No such file or directory"
    )
    assert ran == []  # the app's startup never ran: nothing to undo


async def test_a_failed_start_leaves_the_app_free_to_serve_again():
    # The sockets of a failed start are closed and its life is over: the same App (and port)
    # serves right after, and a client gets its answer.
    app = trioweb.App()
    attempts: list[int] = []

    @app.on_startup
    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("not yet")

    @app.websocket("/ws")
    async def echo(ws: trioweb.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(trioweb.StartupError, match="not yet"):
        await trioweb.serve(app, port=port, handle_signals=False)
    with trio.fail_after(20):
        async with helpers.serving(app, port=port) as server:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send_message("again")
                assert await ws.get_message() == "again"


# -- --workers: the same shutdown summary as one worker -------------------------------------


@pytest.mark.long
async def test_every_worker_logs_its_shutdown_summary_on_sigint():
    command = ["run", "examples.echo:app", "--port", "0", "--workers", "2"]
    process = await open_trioweb(*command)
    stderr = b""
    try:
        url, _, output = await announced_url(process)
        assert b"with 2 workers" in output
        url = url.replace("http://", "ws://") + "/ws"
        async with open_websocket_url(url) as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            process.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed), trio.fail_after(20):
                await ws.get_message()
        with trio.fail_after(20):
            stderr = await read_to_end(process.stderr)
            assert await process.wait() == 0
    finally:
        await reap(process)
    log = stderr.decode()
    # Each worker (its pid in the line) says it got the signal, how many sockets it closed,
    # and how the drain went: one of them had the client, the other none.
    pids = set(re.findall(r"\[(\d+)\] \[INFO\] received SIGINT", log))
    assert len(pids) == 2, log
    closing = re.findall(r"\[(\d+)\] \[INFO\] shutting down: closing (\d) WebSocket", log)
    assert sorted(count for _, count in closing) == ["0", "1"], log
    drained = re.findall(r"\[(\d+)\] \[INFO\] drained in [\d.]+ s: (\d) WebSocket\(s\) closed", log)
    assert {pid for pid, _ in drained} == pids
    assert sorted(count for _, count in drained) == ["0", "1"], log
    assert "closed_by=server code=1001" in log  # the session line, from the worker that had it


async def test_a_startup_that_hangs_past_startup_timeout_is_one_error(capfd):
    app = trioweb.App()
    never = trio.Event()

    @app.on_startup
    async def hangs() -> None:
        await never.wait()

    with pytest.raises(trioweb.StartupError) as raised, trio.fail_after(10):
        await trioweb.serve(app, port=0, handle_signals=False, startup_timeout=0.2)
    assert str(raised.value) == (
        "app startup failed: not done after 0.2 s (hypercorn's startup_timeout)"
    )
    assert capfd.readouterr() == ("", "")


SLOW_START = """
import os, trio
from pathlib import Path
from trioweb import App
app = App()
here = Path(__file__).parent

@app.on_startup
async def wait_for_go():
    (here / f"starting-{os.getpid()}").touch()
    with trio.fail_after(30):
        while not (here / "go").exists():
            await trio.sleep(0.05)
"""


@pytest.mark.long
async def test_a_signal_while_workers_start_stops_them_once_they_serve(tmp_path):
    # SIGTERM comes while both workers are in their startup: each is stopped (drained, exit 0)
    # as soon as it serves, and the supervisor never announces "serving".
    (tmp_path / "slow_start.py").write_text(SLOW_START)
    command = ["run", "slow_start:app", "--port", "0", "--workers", "2"]
    process = await open_trioweb(
        *command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    out = err = b""
    try:
        with trio.fail_after(30):
            # Polling another process's files, within the deadline: both workers in startup.
            while len(list(tmp_path.glob("starting-*"))) < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            (tmp_path / "go").touch()
            outs: list[bytes] = []
            errs: list[bytes] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, process.stdout, outs)
                nursery.start_soon(read_all, process.stderr, errs)
            out, err = b"".join(outs), b"".join(errs)
            assert await process.wait() == 0, err
    finally:
        await reap(process)
    log = err.decode()
    assert b"serving" not in out
    assert "Traceback" not in log
    assert len(re.findall(r"\[INFO\] received SIGTERM", log)) == 2, log
    assert len(re.findall(r"\[INFO\] drained in", log)) == 2, log
