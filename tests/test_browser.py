"""The chat example in a real browser: headless Chromium, driven over DevTools (tests/cdp.py).

The app runs on a real server on loopback; two tabs join a room through the page's form, talk,
and one leaves by closing its tab; a page refused (a room name too long) says why; a page whose
server restarts comes back by itself and resumes where it was. Every wait is on the page's DOM
(a MutationObserver), each bounded; nothing sleeps. Needs Debian's ``chromium`` (and
redis-server for the restart): skipped without them, failed in CI.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import trio
from cdp import Page, launch
from helpers import serving

from trioweb import App
from trioweb.testing import TestClient

STEP = 5  # seconds for any one thing to show in a page
#: The page's reconnect after a restart: a few failed attempts, with the client's backoff.
COMEBACK = 15
ROOT = Path(__file__).parent.parent
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "chat.png"


async def see(page: Page, selector: str, text: str, within: float = STEP) -> None:
    """Wait (bounded) until ``page`` shows ``text`` in an element matching ``selector``."""
    with trio.move_on_after(within) as waited:
        await page.wait_for_text(selector, text)
    if waited.cancelled_caught:
        shown = await page.texts(f"{selector}, #status")
        pytest.fail(f"{text!r} not shown in {selector} within {within}s; the page shows {shown}")


async def log_of(page: Page) -> list[tuple[str, str]]:
    """The chat log as (text, class) pairs: class "event" for notices, "" for messages."""
    return [
        (text, kind)
        for text, kind in await page.evaluate(
            "Array.from(document.querySelectorAll('#log li'),"
            " (item) => [item.textContent, item.className])"
        )
    ]


async def join(page: Page, name: str, room: str) -> None:
    await page.type("#join [name=name]", name)
    await page.type("#join [name=room]", room)
    await page.click("#join button")
    await see(page, "#status", f"in room {room} as {name}")


async def test_two_tabs_chat_in_a_room(chromium: str, tmp_path: Path) -> None:
    from examples.chat import app

    screenshot = tmp_path / "chat.png"
    with trio.fail_after(45):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            alice, zoe = await browser.new_page(height=480), await browser.new_page(height=480)
            for page in (alice, zoe):
                await page.navigate(server.url("/", scheme="http"))
                assert await page.evaluate("document.title") == "trioweb chat"
                assert await page.texts("#status") == ["not connected"]
                # Until joined, there is nothing to send from.
                assert await page.evaluate("document.querySelector('#say button').disabled")

            await join(alice, "alice", "trio")
            await see(alice, "#log li", "alice joined")
            # A non-ASCII name goes through the query string and back through JSON.
            await join(zoe, "zoë", "trio")
            await see(zoe, "#log li", "zoë joined")
            await see(alice, "#log li", "zoë joined")

            # Zoë types and presses Enter; alice types and clicks Send.
            await zoe.type("#say [name=text]", "hello from a real browser")
            await zoe.press_enter()
            await see(alice, "#log li", "zoë: hello from a real browser")
            await see(zoe, "#log li", "zoë: hello from a real browser")
            assert await zoe.evaluate("document.querySelector('#say [name=text]').value") == ""
            await alice.type("#say [name=text]", "hi zoë, <b>not bold</b>")
            await alice.click("#say button")
            await see(zoe, "#log li", "alice: hi zoë, <b>not bold</b>")
            # Text, not markup: the page must not render what members send as HTML.
            assert await zoe.evaluate("document.querySelectorAll('#log b').length") == 0
            assert await zoe.texts("#members") == ["here: alice, zoë"]
            assert await log_of(zoe) == [
                ("zoë joined", "event"),
                ("zoë: hello from a real browser", ""),
                ("alice: hi zoë, <b>not bold</b>", ""),
            ]

            # Zoë closes her tab: she leaves the room's presence, and alice's page is told.
            await zoe.close()
            await see(alice, "#log li", "zoë left")
            assert await alice.texts("#members") == ["here: alice"]
            assert await log_of(alice) == [
                ("alice joined", "event"),
                ("zoë joined", "event"),
                ("zoë: hello from a real browser", ""),
                ("alice: hi zoë, <b>not bold</b>", ""),
                ("zoë left", "event"),
            ]
            assert await alice.texts("#status") == ["in room trio as alice"]
            assert (alice.errors, zoe.errors) == ([], [])  # no JavaScript error in either page
            await alice.screenshot(screenshot)

    print(f"screenshot: {screenshot}")
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if os.environ.get("TRIOWEB_UPDATE_DOCS_IMG"):  # antialiasing varies: only when asked
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)


async def test_a_refused_page_says_why(chromium: str, tmp_path: Path) -> None:
    from examples.chat import app

    with trio.fail_after(30):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            page = await browser.new_page()
            await page.navigate(server.url("/", scheme="http"))
            await page.type("#join [name=name]", "alice")
            await page.type("#join [name=room]", "r" * 101)
            await page.click("#join button")
            # 400 as 4400 with its reason (browser_denials="close"): the client stops trying.
            await see(page, "#status", "refused: a room name is at most 100 characters")
            assert await page.evaluate("document.querySelector('#status').className") == "error"
            assert await page.evaluate("document.querySelector('#say button').disabled")
            assert page.errors == []


def chat_app_on(broker_url: str) -> App:
    """A fresh copy of examples/chat/app.py whose hub is on ``broker_url``: one server's app."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRIOWEB_BROADCAST_URL", broker_url)
        spec = importlib.util.spec_from_file_location("chat_copy", ROOT / "examples/chat/app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.app


async def test_the_page_resumes_after_its_server_restarts(
    chromium: str, tmp_path: Path, redis_server
) -> None:
    """Alice's page on server A, bob on server B (the test client), both on one Redis. A stops
    (the page's socket closes with 1001), bob talks while it is down, A starts again on its
    port: the page comes back by itself, resumes from the last offset it saw (``recovered``),
    and shows what bob said in between, once each, in order."""
    with trio.fail_after(45):
        async with (
            TestClient(chat_app_on(redis_server.url)) as b,
            b.websocket("/ws/trio?name=bob") as bob,
            launch(chromium, tmp_path / "profile") as browser,
        ):
            page = await browser.new_page()
            async with serving(chat_app_on(redis_server.url)) as a:
                await page.navigate(a.url("/", scheme="http"))
                await join(page, "alice", "trio")
                await see(page, "#members", "here: alice, bob")
                await bob.send_json({"text": "before"})
                await see(page, "#log li", "bob: before")
            # A shut down: its sockets closed with 1001, and the page waits to try again.
            lost = "connection lost (1001: server shutting down)"
            await see(page, "#log li", lost)
            for text in ("while you were away", "and again"):
                await bob.send_json({"text": text})
            async with serving(chat_app_on(redis_server.url), port=a.port):
                await see(page, "#log li", "bob: and again", within=COMEBACK)
                await see(page, "#status", "in room trio as alice")
                assert await log_of(page) == [
                    ("alice joined", "event"),
                    ("bob: before", ""),
                    (lost, "event"),
                    ("bob: while you were away", ""),
                    ("bob: and again", ""),
                ]
                # And it goes on: what alice says now reaches bob, through Redis.
                await page.type("#say [name=text]", "back")
                await page.press_enter()
                await see(page, "#log li", "alice: back")
                assert page.errors == []
