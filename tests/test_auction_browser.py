"""The auction's page (examples/auction/index.html) in headless Chromium, over real
``trioweb run examples.auction:app`` processes (issue 14, the browser client on the auction).

What is proved:

1. the page keeps its history across a restart of its server: the page is on server A, another
   member (trio-websocket) on server B, both on one real redis-server. B's member chats and bids;
   A is stopped with SIGTERM (the page's socket closes with 1001); B's member goes on while A is
   down; A is started again on the same port. The page comes back by itself (the client's
   backoff), resumes with ``?since=`` the last offset it saw (``recovered``), and its log then
   shows every bid and chat exactly once, in order: the same offsets and texts as B's member
   received, no duplicate, no gap;
2. a page refused at the handshake (a user name of spaces, or an empty one) shows the server's
   reason and stops: its handshake is the only one in the server's access log over a window of
   ``QUIET`` seconds (several times the client's first backoff ceiling).

Every wait is bounded: the page's DOM through a MutationObserver (tests/cdp.py), the servers'
output and the other member's messages as they come. Needs redis-server and Debian's
``chromium``: skipped without them, failed in CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from cdp import Page, launch
from helpers import HOST
from test_resume_processes import auction_settings, connected, stored
from test_rooms_processes import ROOT, Client, ms

#: Several server processes: `nox -s long` (or `pytest -m long`).
pytestmark = pytest.mark.long

AUCTION = "examples.auction:app"
#: Each test, servers and browser included, ends within this many seconds.
TEST_TIMEOUT = 40
#: Seconds for any one thing to show in the page.
STEP = 5
#: The page's backoff cap (``retryCap`` in index.html), in seconds: after a few failed attempts
#: while A is down (2 s or so, more on a busy machine), the page may wait up to this long.
RETRY_CAP = 10
#: A server starts (Python, the app, Redis) or stops within this.
START_TIMEOUT = 15
#: How long a denied page is watched for a second handshake: three times the client's first
#: backoff ceiling (retryBase, 500 ms), after which a retry would have come.
QUIET = 1.5


# -- the servers -------------------------------------------------------------------------------


@dataclass
class Server:
    """One ``trioweb run examples.auction:app`` process; its stdout read line by line."""

    name: str
    process: trio.Process
    log: Path  # its stderr
    port: int = 0
    #: Its stdout after the "serving" line: the access log, when it has one.
    lines: list[str] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def read(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Read stdout to its end: the announced port first (``task_status``), then lines."""
        stdout = self.process.stdout
        assert stdout is not None
        buffer = b""
        announced = False
        while chunk := await stdout.receive_some():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode()
                if not announced:
                    assert line.startswith("trioweb: serving ") and " on http://" in line, line
                    self.port = int(line.split(" on http://", 1)[1].split()[0].rsplit(":", 1)[1])
                    announced = True
                    task_status.started()
                else:
                    self.lines.append(line)
            self._changed.set()
            self._changed = trio.Event()
        if not announced:
            raise AssertionError(f"{self.name} exited before serving:\n{self.log.read_text()}")

    def handshakes(self) -> list[str]:
        """The access log's lines for WebSocket handshakes (one each, written as it ends)."""
        return [line for line in self.lines if '"GET /ws/' in line]

    async def wait_handshakes(self, count: int) -> None:
        while len(self.handshakes()) < count:
            await self._changed.wait()

    async def stop(self) -> None:
        """SIGTERM, as a service manager stops it: open sockets are closed with 1001."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(START_TIMEOUT):
            await self.process.wait()
        assert self.process.returncode == 0, self.log.read_text()


@asynccontextmanager
async def running(
    name: str,
    logs: Path,
    settings: Mapping[str, str],
    *,
    port: int = 0,
    access_log: bool = False,
) -> AsyncIterator[Server]:
    """``trioweb run examples.auction:app`` on ``port`` (0: any free one) for the block; killed
    at the end if it still runs. Its stderr must show no error."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **settings,
    }
    command = [sys.executable, "-m", "trioweb", "run", AUCTION, "--host", HOST, "--port", str(port)]
    command.append("--access-log" if access_log else "--no-access-log")
    log = logs / f"{name}.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr
        )
    server = Server(name, process, log)
    ok = False
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(START_TIMEOUT):
                await nursery.start(server.read)
            yield server
            ok = True
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
        if not ok:
            print(f"--- {name} (pid {process.pid}) ---\n{log.read_text()}")
    logged = log.read_text()
    assert "Traceback" not in logged and "[ERROR]" not in logged, logged


# -- the page ----------------------------------------------------------------------------------


async def see_text(page: Page, selector: str, text: str, within: float = STEP) -> None:
    """Wait (bounded) until an element matching ``selector`` has exactly the text ``text``."""
    with trio.move_on_after(within) as waited:
        await page.wait_for_text(selector, text)
    if waited.cancelled_caught:
        shown = await page.evaluate(
            "[document.querySelector('#status').textContent,"
            " Array.from(document.querySelectorAll('#log li'), (li) => li.textContent)]"
        )
        pytest.fail(f"{text!r} not in {selector} within {within} s; the page shows {shown}")


async def join(page: Page, user: str, room: str = "lot") -> None:
    """Fill the page's join form and click Join, as a person would."""
    await page.type("#join [name=user]", user)
    await page.type("#join [name=room]", room)
    await page.click("#join button")


async def log_of(page: Page) -> list[tuple[str | None, str]]:
    """The page's log: (offset, text) per line; offset ``None`` for the page's own notices."""
    return [
        (offset, text)
        for offset, text in await page.evaluate(
            "Array.from(document.querySelectorAll('#log li'),"
            " (li) => [li.dataset.offset ?? null, li.textContent])"
        )
    ]


def as_shown(message: dict[str, Any]) -> tuple[str, str]:
    """A stored message as the page's log shows it: (offset, text)."""
    if message["type"] == "chat":
        text = f"{message['by']}: {message['text']}"
    elif message["type"] == "bid":
        text = f"{message['by']} bids {message['amount']}"
    else:
        text = f"sold to {message['by']} for {message['amount']}"
    return message["offset"], text


async def publish(client: Client, *messages: dict[str, Any]) -> None:
    """Send each message and wait for it to come back: stored, with its offset, in order."""
    for message in messages:
        mark = client.mark()
        await client.send(message)
        if message["type"] == "chat":
            await client.wait_for(lambda m, t=message["text"]: m.get("text") == t, mark)
        else:
            echo = await client.wait_for(lambda m: m["type"] in ("bid", "error"), mark)
            assert echo.message == {**echo.message, "type": "bid", "amount": message["amount"]}


def chat(text: str) -> dict[str, Any]:
    return {"type": "chat", "text": text}


def bid(amount: int) -> dict[str, Any]:
    return {"type": "bid", "amount": amount}


# -- 1. a restart ------------------------------------------------------------------------------


async def test_the_page_resumes_after_its_server_restarts_with_each_message_once(
    chromium: str, redis_server: Any, tmp_path: Path
) -> None:
    page_source = (ROOT / "examples" / "auction" / "index.html").read_text()
    assert f"retryCap: {RETRY_CAP * 1000}," in page_source  # the bound below counts on it
    settings = auction_settings(redis_server.url)  # lots of 60 s: no sale during the test
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running("server-b", tmp_path, settings) as b,
            launch(chromium, tmp_path / "profile") as browser,
            connected(b, "bo") as bo,  # B's member
        ):
            page = await browser.new_page()
            async with running("server-a", tmp_path, settings) as a:
                await page.navigate(a.url())
                await join(page, "pat")
                await see_text(page, "#status", "in room lot as pat")
                await publish(bo, chat("hello from B"), bid(10), chat("anyone?"), bid(25))
                await see_text(page, "#log li", "bo bids 25")
                # A stops: the page's socket closes with 1001, and it tries again (A is down).
                await a.stop()
            await see_text(page, "#log li", "connection lost (1001: server shutting down)")
            # Meanwhile, on B: what the page must get when it is back.
            await publish(bo, chat("while you were away"), bid(40), chat("still away?"))
            assert (await log_of(page))[-1][1] == "connection lost (1001: server shutting down)"

            # A again, on the same port: the page's URL. It comes back by itself.
            async with running("server-a-again", tmp_path, settings, port=a.port) as again:
                restarted = trio.current_time()
                await see_text(page, "#log li", "bo: still away?", within=RETRY_CAP + STEP)
                back = trio.current_time()
                await see_text(page, "#status", "in room lot as pat (resumed)")
                # Live again: what B's member sends now reaches the page.
                await publish(bo, chat("welcome back"), bid(55))
                await see_text(page, "#log li", "bo bids 55")
                await see_text(page, "#high", "55 (bo)")
                status = await page.evaluate("({...document.querySelector('#status').dataset})")
                shown = await log_of(page)
                assert page.errors == []
                assert again.port == a.port

    # Every stored message B's member received, as the page shows it: the same, in order.
    reference = [as_shown(m) for m in stored(bo)]
    messages = [(offset, text) for offset, text in shown if offset is not None]
    assert messages == reference
    offsets = [int(offset) for offset, _ in messages]
    assert offsets == sorted(set(offsets))  # no duplicate (and no gap: equal to the reference)
    # Kept, not reloaded: the notices of the loss and of the resume are where they happened.
    assert [text for _, text in shown] == [
        "bo: hello from B",
        "bo bids 10",
        "bo: anyone?",
        "bo bids 25",
        "connection lost (1001: server shutting down)",
        "reconnected: what you missed follows",
        "bo: while you were away",
        "bo bids 40",
        "bo: still away?",
        "bo: welcome back",
        "bo bids 55",
    ]
    assert status == {"state": "open", "recovered": "1"}  # one exact resume, no reset
    print(f"the page was back {ms(back - restarted)} after server A was up again")


# -- 2. a denial -------------------------------------------------------------------------------


async def test_a_denied_page_shows_the_reason_and_does_not_try_again(
    chromium: str, tmp_path: Path
) -> None:
    reason = "a user name is required: /ws/ROOM?user=NAME"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running("server", tmp_path, {}, access_log=True) as server,
            launch(chromium, tmp_path / "profile") as browser,
        ):
            spaces, empty = await browser.new_page(), await browser.new_page()
            for page in (spaces, empty):
                await page.navigate(server.url())
            await join(spaces, "   ")  # the form takes it; the server strips it to nothing
            # An empty name: the form refuses it, unless its check is bypassed.
            await empty.evaluate("document.querySelector('#join [name=user]').required = false")
            await join(empty, "")
            for page in (spaces, empty):
                await see_text(page, "#status", f"refused: {reason}")
                # Closed for good: no attempt is waiting (a retry would be in state "waiting").
                assert await page.evaluate("document.querySelector('#status').dataset.state") == (
                    "closed"
                )
            with trio.fail_after(STEP):  # (each is logged as it ends)
                await server.wait_handshakes(2)
            # Nothing more: no page knocks again.
            with trio.move_on_after(QUIET):
                await server.wait_handshakes(3)
            handshakes = server.handshakes()
            for page in (spaces, empty):
                assert await log_of(page) == []
                assert page.errors == []
    # Each page's one handshake, refused with 401 (a close 4401 for the page).
    assert len(handshakes) == 2, handshakes
    assert all('"GET /ws/lot 1.1" 401 ' in line for line in handshakes), handshakes
