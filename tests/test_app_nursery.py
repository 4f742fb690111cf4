"""app.nursery survives a failing task; App(background_failure="exit") stops the server instead."""

import logging
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import HOST, serving
from trio_websocket import ConnectionClosed, open_websocket_url

from trioweb import App, WebSocket, serve
from trioweb.server import BackgroundTaskError
from trioweb.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioweb" and r.levelno >= logging.ERROR]


async def test_a_failing_task_is_logged_with_its_traceback_and_counted(caplog):
    app = App()

    async def crash():
        raise ValueError("background bug")

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        # The shutdown still reports that the app had a failure (the test client raises it).
        with pytest.raises(RuntimeError, match=r"shutdown failed: .*ValueError: background bug"):
            async with TestClient(app):
                assert app.background_failures == 0
                app.nursery.start_soon(crash)
                await trio.testing.wait_all_tasks_blocked()
                assert app.background_failures == 1
    assert app.background_failures == 1  # still readable after the shutdown
    [record] = errors_logged(caplog)
    assert "crash" in record.getMessage()  # names the task
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    assert 'raise ValueError("background bug")' in caplog.text  # with its traceback


async def test_siblings_keep_running_and_later_starts_work(caplog):
    app = App()
    go_on = trio.Event()
    sibling_done = trio.Event()
    sibling_cancelled = []

    async def sibling():
        try:
            await go_on.wait()
        except trio.Cancelled:
            sibling_cancelled.append(True)
            raise
        sibling_done.set()

    async def crash(message):
        raise ConnectionError(message)

    async def ready(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started("ready")
        await trio.sleep_forever()

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        with pytest.raises(RuntimeError, match=r"2 background tasks in app\.nursery failed"):
            async with TestClient(app):
                app.nursery.start_soon(sibling)
                app.nursery.start_soon(crash, "first")
                await trio.testing.wait_all_tasks_blocked()
                assert not sibling_cancelled  # a failure does not cancel the others
                go_on.set()
                await sibling_done.wait()
                # Later starts work: start_soon, start, and a second failure is counted too.
                assert await app.nursery.start(ready) == "ready"
                app.nursery.start_soon(crash, "second")
                await trio.testing.wait_all_tasks_blocked()
                assert app.background_failures == 2
                assert await app.nursery.start(ready) == "ready"
    assert [r.exc_info[1].args for r in errors_logged(caplog) if r.exc_info] == [
        ("first",),
        ("second",),
    ]


async def test_handshakes_that_use_app_nursery_still_work_after_a_failure():
    """The issue's symptom: every handshake that used app.nursery got a 500 until a restart."""
    app = App()
    crashed = trio.Event()

    async def subscribe(topic, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started(f"subscribed to {topic}")
        await trio.sleep_forever()

    @app.on_startup
    async def start_a_fragile_task():
        async def fragile():
            try:
                raise OSError("lost the feed")
            finally:
                crashed.set()

        app.nursery.start_soon(fragile)

    @app.websocket("/ws/{topic}")
    async def feed(ws: WebSocket, topic: str):
        await ws.accept()
        await ws.send(await app.nursery.start(subscribe, topic))

    async with serving(app) as server:
        await crashed.wait()
        for topic in ("a", "b"):
            async with open_websocket_url(server.url(f"/ws/{topic}")) as ws:
                assert await ws.get_message() == f"subscribed to {topic}"
        assert app.background_failures == 1


async def test_a_task_that_fails_before_it_started_raises_into_start(caplog):
    app = App()
    go_on = trio.Event()

    async def broken(task_status=trio.TASK_STATUS_IGNORED):
        raise ConnectionError("broker unreachable")

    async def fails_later(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started("up")
        await go_on.wait()
        raise ConnectionError("broker gone")

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        with pytest.raises(RuntimeError, match="broker gone"):
            async with TestClient(app):
                # As trio does: the caller of start() gets the error, not the log.
                with pytest.raises(ConnectionError, match="broker unreachable"):
                    await app.nursery.start(broken)
                assert app.background_failures == 0
                assert not errors_logged(caplog)
                # Once started, a failure is the nursery's: logged and counted.
                assert await app.nursery.start(fails_later) == "up"
                go_on.set()
                await trio.testing.wait_all_tasks_blocked()
                assert app.background_failures == 1
    [record] = errors_logged(caplog)
    assert record.exc_info is not None and record.exc_info[1].args == ("broker gone",)


async def test_cancellation_at_shutdown_is_not_a_failure(caplog):
    app = App()
    cancelled = trio.Event()

    async def forever():
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app):
            app.nursery.start_soon(forever)
    assert cancelled.is_set()
    assert app.background_failures == 0
    assert not errors_logged(caplog)


async def test_an_error_during_the_shutdown_is_counted_and_the_cancellation_goes_on(caplog):
    """A task's own nursery ends with an error and a cancellation: only the error is caught."""
    app = App()
    ran = []

    async def cleanup_fails():
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("cleanup bug")

    async def with_helper():
        async with trio.open_nursery() as inner:
            inner.start_soon(cleanup_fails)
            await trio.sleep_forever()
        ran.append("after the nursery")  # never: the task was cancelled

    @app.on_shutdown
    async def after():
        ran.append("shutdown hook")

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        with pytest.raises(RuntimeError, match="cleanup bug"):
            async with TestClient(app):
                app.nursery.start_soon(with_helper)
                await trio.testing.wait_all_tasks_blocked()
    assert ran == ["shutdown hook"]
    assert app.background_failures == 1
    [record] = errors_logged(caplog)
    assert record.exc_info is not None
    logged = record.exc_info[1]
    assert isinstance(logged, ExceptionGroup)
    assert [type(e) for e in logged.exceptions] == [ValueError]  # no Cancelled in it


async def test_keyboard_interrupt_in_a_task_still_propagates(caplog):
    app = App()

    async def interrupted():
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
            async with TestClient(app):
                app.nursery.start_soon(interrupted)
                await trio.sleep_forever()
    assert app.background_failures == 0
    assert not errors_logged(caplog)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="background_failure must be 'log' or 'exit'"):
        App(background_failure="ignore")  # type: ignore[arg-type]


# -- App(background_failure="exit"): fail fast -----------------------------------------------


def fragile_app() -> tuple[App, trio.Event]:
    """An echo app whose background task fails once ``crash`` is set."""
    app = App(background_failure="exit")
    crash = trio.Event()

    @app.on_startup
    async def watch():
        async def watcher():
            await crash.wait()
            raise ConnectionError("broker gone")

        app.nursery.start_soon(watcher)

    @app.websocket("/ws")
    async def echo(ws: WebSocket):
        async with ws:
            async for message in ws:
                await ws.send(message)

    return app, crash


async def test_exit_policy_closes_sockets_with_1001_and_serve_raises(caplog):
    app, crash = fragile_app()
    with caplog.at_level(logging.INFO, logger="trioweb"), trio.fail_after(30):
        with pytest.RaisesGroup(
            pytest.RaisesExc(
                BackgroundTaskError,
                match=r"^a background task in app\.nursery failed: ConnectionError: broker gone$",
            )
        ):
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(partial(serve, app, HOST, 0, handle_signals=False))
                url = urls[0].replace("http://", "ws://") + "/ws"
                async with open_websocket_url(url) as ws:
                    await ws.send_message("before")
                    assert await ws.get_message() == "before"
                    crash.set()
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                assert (closed.value.reason.code, closed.value.reason.reason) == (
                    1001,
                    "server shutting down",
                )
    assert app.background_failures == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "trioweb"]
    assert any("background_failure='exit'" in m for m in messages), messages


async def test_exit_policy_waits_for_a_signal_when_nothing_fails():
    """The policy changes nothing until a task fails: the server stops as usual, no error."""
    app, _ = fragile_app()
    async with serving(app) as server, open_websocket_url(server.url("/ws")) as ws:
        await ws.send_message("hi")
        assert await ws.get_message() == "hi"
    assert app.background_failures == 0


#: An echo app whose background task fails once the app has received a message.
FRAGILE_APP = """\
import trio

from trioweb import App, WebSocket

app = App(background_failure="exit")
crash = trio.Event()


@app.on_startup
async def watch():
    async def watcher():
        await crash.wait()
        raise ConnectionError("broker gone")

    app.nursery.start_soon(watcher)


@app.websocket("/ws")
async def echo(ws: WebSocket):
    async with ws:
        async for message in ws:
            crash.set()
            await ws.send(message)
"""


async def start_run(cwd: Path, stderr_path: Path, *args: str) -> tuple[trio.Process, str]:
    """Start `trioweb run ARGS --port 0` in ``cwd``; return it and its ws:// base URL."""
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trioweb", "run", *args, "--port", "0"],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's trioweb
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    output = b""
    with trio.fail_after(30):
        while (found := re.search(rb"http://[\d.]+:\d+", output)) is None:
            chunk = await process.stdout.receive_some()
            assert chunk, f"trioweb run exited without announcing a URL: {output!r}"
            output += chunk
    return process, found.group().decode().replace("http://", "ws://")


async def test_trioweb_run_exits_1_with_one_line_when_a_background_task_fails(tmp_path):
    (tmp_path / "fragile.py").write_text(FRAGILE_APP)
    stderr_path = tmp_path / "stderr.txt"
    process, url = await start_run(tmp_path, stderr_path, "fragile:app")
    try:
        async with open_websocket_url(url + "/ws") as ws:
            await ws.send_message("crash")  # the handler lets the background task fail
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(20):
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == 1001
        with trio.fail_after(20):
            assert await process.wait() == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    errors = stderr_path.read_text()
    assert errors.count("Traceback") == 1  # the task's, logged once when it failed
    assert errors.endswith(
        "trioweb: error: a background task in app.nursery failed: ConnectionError: broker gone\n"
    )


async def test_with_workers_one_failing_worker_stops_them_all(tmp_path):
    """`--workers 2`: the worker whose task failed drains and exits, then so do the others."""
    (tmp_path / "fragile.py").write_text(FRAGILE_APP)
    stderr_path = tmp_path / "stderr.txt"
    process, url = await start_run(tmp_path, stderr_path, "fragile:app", "--workers", "2")
    try:
        async with open_websocket_url(url + "/ws") as ws:
            await ws.send_message("crash")  # one worker's task fails; the other's does not
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(20):
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == 1001
        with trio.fail_after(20):
            assert await process.wait() == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    errors = stderr_path.read_text()
    assert errors.count("Traceback") == 1
    assert (
        "trioweb: error: a background task in app.nursery failed: ConnectionError: broker gone\n"
        in errors
    )
