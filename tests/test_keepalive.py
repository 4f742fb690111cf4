"""Pings from one task per trio run (``trioweb/_keepalive.py``): each socket is a deadline in a
heap, not a task, and is called at its deadlines, exactly, until it says it is done."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio
import trio.testing
import trio_websocket
from helpers import serving

from trioweb import App, WebSocket
from trioweb._keepalive import schedule


class Socket:
    """Records when it was called; stops after ``calls`` calls."""

    def __init__(self, interval: float, calls: int = 1000, fail: bool = False) -> None:
        self.interval = interval
        self.calls = calls
        self.fail = fail
        self.times: list[float] = []

    def keepalive(self) -> float | None:
        self.times.append(trio.current_time())
        if self.fail:
            raise RuntimeError("a bug in one socket's keepalive")
        return self.interval if len(self.times) < self.calls else None


async def test_each_socket_is_called_at_its_own_deadlines(autojump_clock):
    start = trio.current_time()
    every_second, every_three, twice = Socket(1.0), Socket(3.0), Socket(0.5, calls=2)
    schedule(every_second, 1.0)
    schedule(every_three, 3.0)
    schedule(twice, 0.5)
    await trio.sleep(10.2)
    seconds = [float(n) for n in range(1, 11)]
    assert [t - start for t in every_second.times] == pytest.approx(seconds)
    assert [t - start for t in every_three.times] == pytest.approx([3.0, 6.0, 9.0])
    assert [t - start for t in twice.times] == pytest.approx([0.5, 1.0])  # then it said done


async def test_a_socket_added_with_an_earlier_deadline_wakes_the_task(autojump_clock):
    start = trio.current_time()
    schedule(Socket(100.0), 100.0)
    await trio.testing.wait_all_tasks_blocked()  # the task now sleeps until t=100
    early = Socket(1.0, calls=1)
    schedule(early, 1.0)
    await trio.sleep(2)
    assert [t - start for t in early.times] == pytest.approx([1.0])


async def test_a_socket_that_fails_does_not_stop_the_others(autojump_clock, caplog):
    start = trio.current_time()
    steady, broken = Socket(1.0), Socket(1.0, fail=True)
    schedule(broken, 1.0)
    schedule(steady, 1.0)
    await trio.sleep(3.5)
    assert [t - start for t in steady.times] == pytest.approx([1.0, 2.0, 3.0])
    assert len(broken.times) == 1  # called once, failed, never again
    assert "keepalive of a WebSocket failed" in caplog.text


async def test_an_ended_socket_is_never_called_again_and_let_go_of_at_once(autojump_clock):
    ended = [Socket(1.0) for _ in range(200)]
    deadlines = [schedule(socket, 1.0) for socket in ended]
    refs = [weakref.ref(socket) for socket in ended]
    await trio.sleep(1.5)
    assert all(len(socket.times) == 1 for socket in ended)
    for deadline in deadlines:
        deadline.cancel()
    del ended
    gc.collect()
    assert all(ref() is None for ref in refs)  # nothing in the heap keeps them
    steady = Socket(1.0)
    schedule(steady, 1.0)
    await trio.sleep(2.1)
    assert len(steady.times) == 2


def tasks_of_the_run() -> int:
    """Every task of the current trio run."""
    count, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        nursery = nurseries.pop()
        for task in nursery.child_tasks:
            count += 1
            nurseries.extend(task.child_nurseries)
    return count


async def tasks_added_per_socket(ping_interval: float | None) -> float:
    """Over a real server: the tasks 20 more idle sockets add to the run, per socket (after a
    first batch of 20, which also starts whatever a run starts once)."""
    app = App()
    opened = trio.Semaphore(0)

    @app.websocket("/idle")
    async def idle(ws: WebSocket) -> None:
        await ws.accept()
        opened.release()
        async for _ in ws:
            pass

    async with serving(app, ping_interval=ping_interval) as server:
        async with trio.open_nursery() as clients:
            done = trio.Event()

            async def hold() -> None:
                async with trio_websocket.open_websocket_url(server.url("/idle")):
                    await done.wait()

            for _ in range(2):
                before = tasks_of_the_run()
                for _ in range(20):
                    clients.start_soon(hold)
                for _ in range(20):
                    await opened.acquire()
                await trio.testing.wait_all_tasks_blocked()
                added = tasks_of_the_run() - before
            done.set()
    return added / 20


async def test_pings_add_no_task_per_socket():
    # Pings on (serve()'s default, every 20 s) and off: the same tasks per socket.
    assert await tasks_added_per_socket(20.0) == await tasks_added_per_socket(None)
