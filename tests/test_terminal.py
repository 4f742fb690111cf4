"""Ctrl+C in a terminal: one drain per process, never cut short by the terminal itself.

A terminal sends SIGINT to the whole foreground process group. Under `trioweb run --workers N`
that group used to hold the workers too, so each got SIGINT twice (the terminal's and the
supervisor's relay) and the second cut its drain short. Each test starts `trioweb run` in a
session of its own and signals the whole group with ``os.killpg``, as a terminal does.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import trio
from processes import ROOT, announced_url, open_trioweb, read_all, workers_of
from trio_websocket import ConnectionClosed, open_websocket_url

#: A handler whose cleanup, after the drain has cancelled it, waits for the test's "go" file:
#: the drain is then still waiting for it when any extra signal would arrive.
SLOW_GOODBYE = """
import os
import trio
from pathlib import Path
from trioweb import App, WebSocket
app = App()
here = Path(__file__).parent

@app.websocket("/ws")
async def slow_goodbye(ws: WebSocket) -> None:
    async with ws:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(30):
                (here / "cleanup-started").write_text(str(os.getpid()))
                while not (here / "go").exists():
                    await trio.sleep(0.02)
"""


async def ctrl_c_drains_every_process(tmp_path: Path, *workers: str, presses: int = 1) -> str:
    """Start `trioweb run` (with ``workers``) in its own session, open a socket, send SIGINT to
    the whole process group ``presses`` times, let the cleanup finish; assert close 1001 and
    exit 0. The log."""
    (tmp_path / "slow_goodbye.py").write_text(SLOW_GOODBYE)
    command = ["run", "slow_goodbye:app", "--port", "0", "--no-access-log", *workers]
    process = await open_trioweb(
        *command,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        new_session=True,  # its own process group, as a shell gives a foreground job
    )
    errs: list[bytes] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, process.stderr, errs)
            url, _, _ = await announced_url(process)
            url = url.replace("http://", "ws://") + "/ws"
            async with open_websocket_url(url) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                os.killpg(process.pid, signal.SIGINT)  # Ctrl+C
                with trio.fail_after(20):
                    # Polling another process's file, within the deadline.
                    while not (tmp_path / "cleanup-started").exists():  # noqa: ASYNC110
                        await trio.sleep(0.02)
                if presses == 2:
                    await press_again(process.pid, tmp_path, errs)
                (tmp_path / "go").touch()
                with pytest.raises(ConnectionClosed) as closed, trio.fail_after(20):
                    await ws.get_message()
            assert closed.value.reason.code == 1001
            with trio.fail_after(20):
                assert await process.wait() == 0, b"".join(errs).decode()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return b"".join(errs).decode()


async def press_again(supervisor: int, tmp_path: Path, errs: list[bytes]) -> None:
    """A second Ctrl+C while the process with the client drains; returns once it got it."""
    busy = int((tmp_path / "cleanup-started").read_text())
    with trio.fail_after(20):
        # The others exit on their own: the second SIGINT is for the one still draining (one
        # that is past its signal handling and not yet gone would take it as a crash).
        while busy != supervisor and workers_of(supervisor) != {busy}:  # noqa: ASYNC110
            await trio.sleep(0.02)
        os.killpg(supervisor, signal.SIGINT)
        # Polling the log of another process, within the deadline.
        while b"".join(errs).count(f"[{busy}] [INFO] received SIGINT".encode()) < 2:  # noqa: ASYNC110
            await trio.sleep(0.02)


def assert_one_complete_drain_each(log: str, processes: int) -> None:
    """Each process got one SIGINT, and its drain waited for every socket it closed."""
    received = re.findall(r"\[(\d+)\] \[INFO\] received SIGINT", log)
    assert len(received) == len(set(received)) == processes, log
    drained = re.findall(
        r"\[(\d+)\] \[INFO\] drained in [\d.]+ s: (\d) WebSocket\(s\) closed, (\d) still open", log
    )
    assert {pid for pid, _, _ in drained} == set(received), log
    assert sorted(closed for _, closed, _ in drained) == ["0"] * (processes - 1) + ["1"], log
    assert {still_open for _, _, still_open in drained} == {"0"}, log


# Under a second each (two workers included): in the default suite.
async def test_ctrl_c_drains_every_worker_once(tmp_path):
    log = await ctrl_c_drains_every_process(tmp_path, "--workers", "2")
    assert_one_complete_drain_each(log, 2)


async def test_ctrl_c_drains_a_single_process(tmp_path):
    log = await ctrl_c_drains_every_process(tmp_path)
    assert_one_complete_drain_each(log, 1)


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one process", "2 workers"])
async def test_a_second_ctrl_c_cuts_the_drain_short(tmp_path, workers):
    # As for one process, so through the supervisor: a human who really wants out gets out.
    log = await ctrl_c_drains_every_process(tmp_path, *workers, presses=2)
    busy = (tmp_path / "cleanup-started").read_text()
    assert log.count(f"[{busy}] [INFO] received SIGINT") == 2, log
    assert re.search(
        rf"\[{busy}\] \[INFO\] drained in [\d.]+ s: 0 WebSocket\(s\) closed, 1 still open", log
    ), log
