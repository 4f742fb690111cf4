"""The chat example in a real browser: headless Chromium, driven over DevTools (tests/cdp.py).

The app runs on a real server on loopback; two tabs join a room through the page's form, talk,
and one leaves by closing its tab. Every wait is on the page's DOM (a MutationObserver), each
bounded; nothing sleeps. Needs Debian's ``chromium``: skipped without it, failed in CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio
from cdp import Page, launch
from helpers import serving

STEP = 5  # seconds for any one thing to show in a page
DOCS_SCREENSHOT = Path(__file__).parent.parent / "docs" / "img" / "chat.png"


async def see(page: Page, selector: str, text: str) -> None:
    """Wait (bounded) until ``page`` shows ``text`` in an element matching ``selector``."""
    with trio.move_on_after(STEP) as waited:
        await page.wait_for_text(selector, text)
    if waited.cancelled_caught:
        shown = await page.texts(f"{selector}, #status")
        pytest.fail(f"{text!r} not shown in {selector} within {STEP}s; the page shows {shown}")


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
            alice, zoe = await browser.new_page(height=440), await browser.new_page(height=440)
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
            assert await log_of(zoe) == [
                ("zoë joined", "event"),
                ("zoë: hello from a real browser", ""),
                ("alice: hi zoë, <b>not bold</b>", ""),
            ]

            # Zoë closes her tab: the server's cleanup tells the room.
            await zoe.close()
            await see(alice, "#log li", "zoë left")
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
