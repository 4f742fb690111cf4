"""What an operator of `trioweb run --workers N --metrics --health` relies on beyond the happy
path: a supervisor that is killed outright takes its workers and its metrics directory with
it; the metrics port answers only for the metrics."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket

import pytest
import trio
from test_metrics import start_cli
from trio_websocket import ConnectionClosed, open_websocket_url


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


def pid_is_worker(pid: int) -> bool:
    """Whether ``pid`` runs a spawned worker (not multiprocessing's resource tracker)."""
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return b"spawn_main" in file.read()


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux), to clean up after a failed test."""
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(child) for child in file.read().split()]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
