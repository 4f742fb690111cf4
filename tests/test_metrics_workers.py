"""Metrics of `trioweb run --workers N --metrics` when processes die: a supervisor killed
outright takes its workers and its metrics directory with it; a run killed whole leaves its
directory to the next run, which removes it (and only it); stale live gauges of dead processes
in the operator's own directory do not count; a worker that exits alone keeps what it counted.
Each starts several processes: all in the long suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import pytest
import trio
from helpers import http_get
from processes import (
    children,
    kill_all,
    pid_is_worker,
    reap,
    refuses,
    running,
    start_cli,
    terminate,
)
from test_metrics import TWO_WORKERS_WITH_METRICS, Samples, scrape, value
from trio_websocket import ConnectionClosed, open_websocket_url


async def one_message_counted(port: int) -> Samples:
    """Scrape ``port`` until it counts the one message sent to ``/ws/{room}`` (a worker adds its
    counts within a second; at most 10 s); that scrape."""
    with trio.fail_after(10):
        while True:
            samples = await scrape(port)
            if value(samples, "trioweb_websocket_messages_total", route="/ws/{room}",
                     direction="in") == 1:  # fmt: skip
                return samples
            await trio.sleep(0.2)


@pytest.mark.long
async def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path):
    # kill -9 of the supervisor (an OOM kill, a process manager that only signals the main
    # pid): its workers must not go on serving unsupervised, holding the port that the
    # restarted service needs, and the run's metrics directory must not stay behind.
    process, port = await start_cli(
        *TWO_WORKERS_WITH_METRICS, "--graceful-timeout", "5", tmp=tmp_path
    )
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
        await reap(process)
        kill_all(workers)


@pytest.mark.long
async def test_a_run_killed_whole_leaves_its_metrics_directory_to_the_next_run(tmp_path):
    # kill -9 of every process of the run at once (a container's OOM kill, a cgroup's kill; the
    # workers have sessions of their own, so `kill -9 -PGID` of the supervisor's group is not
    # it): nobody of the run is left to remove its metrics directory, and /tmp would fill over
    # many crashes.
    # The next run removes it, and only it: not a directory of the operator's, not a live run's.
    run = TWO_WORKERS_WITH_METRICS
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
        await one_message_counted(port)
        # A run that starts while this one lives leaves this one's directory alone.
        alive, _ = await start_cli(*run, tmp=tmp_path, new_session=True)
        assert current.exists()
        assert len(list(tmp_path.glob("trioweb-metrics-[0-9]*"))) == 2
        assert (await http_get(port, "/metrics"))[0] == 200  # its metrics are still served
    finally:
        for process in [later, alive]:
            if process is not None and process.returncode is None:
                await terminate(process)
        kill_all(workers)
    assert operators.exists()  # the operator's own: never touched
    assert not list(tmp_path.glob("trioweb-metrics-[0-9]*"))  # both runs removed their own


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
        process, port = await start_cli(*TWO_WORKERS_WITH_METRICS, tmp=tmp_path)
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/r") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            samples = await one_message_counted(port)
        assert value(samples, "trioweb_websocket_connections_open", route="/ws/{room}") == 1
    finally:
        await terminate(process)
    assert directory.exists()  # the operator's own: kept


@pytest.mark.long
async def test_a_worker_that_exits_keeps_what_it_counted(tmp_path):
    # One worker stopped on its own (SIGTERM to it alone): the other serves on, and a scrape
    # still has every session the gone worker counted, while its open sockets are gone.
    process, port = await start_cli(*TWO_WORKERS_WITH_METRICS, tmp=tmp_path)
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
        await terminate(process)
