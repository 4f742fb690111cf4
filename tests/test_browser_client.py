"""trioweb's browser client (``trioweb/static/client.js``), in headless Chromium against a real
server on loopback.

A test app below produces offsets itself (it has no history: each route plays a script of
what a server does), and a test page imports the client from ``app.serve_client()`` and writes
each event it gets into the DOM. Every wait is on that DOM (tests/cdp.py: a MutationObserver),
bounded; the timings that matter (backoff ceilings, the heartbeat) are the client's own,
set small. Needs Debian's ``chromium``: skipped without it, failed in CI.
"""

from __future__ import annotations

import importlib.util
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from cdp import Page, launch
from helpers import Server, serving

import trioweb
from trioweb import App, Request, WebSocket, abort
from trioweb._client import client_source
from trioweb.testing import TestClient

STEP = 5  # seconds for any one thing to happen in the page
SNIPPETS = Path(__file__).parent.parent / "docs" / "snippets"

#: The test page: every event of the connection, in order, in `log` and as an item of #events.
PAGE = """<!doctype html><title>client</title><ol id="events"></ol>
<script type="module">
import { connect } from "/trioweb.js";
const names = ["open", "message", "text", "recovered", "reset", "close", "denied", "error"];
window.log = [];
window.start = (url, options) => {
    const socket = window.socket = connect(url, options);
    for (const name of names) socket.on(name, (detail) => {
        log.push({ name, detail });
        const item = document.createElement("li");
        item.textContent = `${name} ${JSON.stringify(detail)}`;
        document.getElementById("events").append(item);
    });
    return socket.state;
};
window.count = (name) => log.filter((event) => event.name === name).length;
</script>"""


@dataclass
class Script:
    """What the test app's routes saw: the query of each attempt, each socket's close."""

    attempts: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    closes: dict[str, list[int | None]] = field(default_factory=dict)
    pings: int = 0
    closed: trio.Event = field(default_factory=trio.Event)

    def attempt(self, ws: WebSocket) -> int:
        """Record this handshake; its number on its route, from 0."""
        seen = self.attempts.setdefault(ws.path, [])
        seen.append(dict(ws.query_params))
        return len(seen) - 1


def welcome(recovered: bool) -> dict[str, Any]:
    return {"type": "welcome", "recovered": recovered}


def feed_app() -> tuple[App, Script]:
    app = App(browser_denials="close")
    app.serve_client()
    script = Script()

    @app.get("/")
    async def page(request: Request) -> str:
        return PAGE

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        script.closes.setdefault(ws.path, []).append(ws.close_code)
        script.closed.set()

    async def answer(ws: WebSocket) -> None:
        """Echo what the page sends, answer its pings; until it leaves."""
        async for message in ws.iter_json():
            if message == {"type": "ping"}:
                script.pings += 1
                await ws.send_json({"type": "pong"})
            else:
                await ws.send_json({"echo": message})

    @app.websocket("/normal")
    async def normal(ws: WebSocket) -> None:
        script.attempt(ws)
        await ws.send_json(welcome(False))
        for n in ["1", "2", "2", "10", "9"]:  # the second "2" and "9" are not after the last
            await ws.send_json({"offset": n, "n": n})
        await ws.send("not JSON")
        await ws.send_json({"no": "offset"})
        await answer(ws)

    @app.websocket("/restart")
    async def restart(ws: WebSocket) -> None:
        attempt = script.attempt(ws)
        since = ws.query_params.get("since")
        if attempt == 0:
            await ws.send_json(welcome(False))
            await ws.send_json({"offset": "1"})
            await ws.send_json({"offset": "2"})
            await ws.close(1012, "restarting")
        elif attempt == 1:  # the history has everything after `since`: replay it
            await ws.send_json(welcome(since == "2"))
            await ws.send_json({"offset": "2"})  # (a replay that overlaps: dropped)
            await ws.send_json({"offset": "3"})
            await ws.close(1012, "restarting again")
        elif attempt == 2:  # the history was lost: start over; and restart before any message
            await ws.send_json(welcome(False))
            await ws.close(1012, "restarting once more")
        else:  # offsets of a new life
            await ws.send_json(welcome(False))
            await ws.send_json({"offset": "1000"})
            await answer(ws)

    @app.websocket("/deny")
    async def deny(ws: WebSocket) -> None:
        script.attempt(ws)
        abort(403, "not for you")

    @app.websocket("/policy")
    async def policy(ws: WebSocket) -> None:
        script.attempt(ws)
        await ws.accept()
        await ws.close(1008, "you were warned")

    @app.websocket("/silent")
    async def silent(ws: WebSocket) -> None:
        if script.attempt(ws) == 0:
            await ws.accept()
            async for _ in ws:  # reads, never sends, until the client gives up on it
                pass
            return
        await ws.send_json(welcome(False))
        await answer(ws)

    @app.websocket("/backoff")
    async def backoff(ws: WebSocket) -> None:
        attempt = script.attempt(ws)
        if attempt < 3:
            await ws.accept()
            await ws.close(1013, "try again later")
            return
        await ws.send_json(welcome(False))
        if attempt == 3:  # stays open for 6 of the page's pings (600 ms), then restarts
            async for message in ws.iter_json():
                script.pings += message == {"type": "ping"}
                if script.pings == 6:
                    await ws.close(1012, "restarting")
                    return
        await answer(ws)

    return app, script


async def see(page: Page, selector: str, text: str) -> None:
    """Wait (bounded) until ``page`` shows ``text`` in an element matching ``selector``."""
    with trio.move_on_after(STEP) as waited:
        await page.wait_for_text(selector, text)
    if waited.cancelled_caught:
        shown = await page.texts(f"{selector}, #status")
        pytest.fail(f"{text!r} not shown in {selector} within {STEP}s; the page shows {shown}")


async def until(page: Page, predicate: str) -> None:
    """Wait (bounded) until ``predicate`` holds in the page."""
    with trio.move_on_after(STEP) as waited:
        await page.wait_until(predicate)
    if waited.cancelled_caught:
        pytest.fail(f"not within {STEP}s: {predicate}; events: {await events(page)}")


async def events(page: Page) -> list[tuple[str, Any]]:
    return [(event["name"], event.get("detail")) for event in await page.evaluate("log")]


def names(seen: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in seen]


async def started(browser: Any, server: Server, url: str, **options: Any) -> Page:
    page = await browser.new_page()
    await page.navigate(server.url("/", scheme="http"))
    state = await page.evaluate(f"start({json.dumps(url)}, {json.dumps(options)})")
    assert state == "connecting"
    return page


async def test_messages_json_and_text_and_offsets_dropped_unless_new(
    chromium: str, tmp_path: Path
) -> None:
    app, script = feed_app()
    with trio.fail_after(20):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            # An offset saved from an earlier visit, which the server cannot resume from.
            page = await started(browser, server, "/normal?room=r", since="7")
            await until(page, "count('message') === 5")
            assert await page.evaluate("socket.send({hello: 'server'})")
            assert await page.evaluate("socket.sendText(JSON.stringify([1, 2]))")
            await until(page, "count('message') === 7")
            assert await page.evaluate("socket.lastOffset") == "10"
            # Only a socket that is open sends, and close() ends everything at once.
            await page.evaluate("socket.close()")
            assert await page.evaluate("[socket.state, socket.send({late: true})]") == [
                "closed",
                False,
            ]
            with pytest.raises(Exception, match="unknown option"):
                await page.evaluate("start('/normal', {retrybase: 1})")
            seen = await events(page)
            assert page.errors == []
        await server.ended.wait()
    url = f"ws://127.0.0.1:{server.port}/normal?room=r&since=7"
    assert seen == [
        ("open", {"url": url}),
        ("reset", welcome(False)),  # and "7" is forgotten: "1" and "2" are not dropped
        ("message", welcome(False)),
        ("message", {"offset": "1", "n": "1"}),
        ("message", {"offset": "2", "n": "2"}),
        ("message", {"offset": "10", "n": "10"}),  # 10 > 2 as numbers, not as strings
        ("text", "not JSON"),
        ("message", {"no": "offset"}),
        ("message", {"echo": {"hello": "server"}}),
        ("message", {"echo": [1, 2]}),
        ("close", {"code": 1000, "reason": "", "willRetry": False, "delay": None}),
    ]
    assert script.attempts["/normal"] == [{"room": "r", "since": "7"}]
    assert script.closes["/normal"] == [1000]


async def test_a_restart_reconnects_after_a_backoff_and_resumes_from_the_last_offset(
    chromium: str, tmp_path: Path
) -> None:
    app, script = feed_app()
    with trio.fail_after(20):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            page = await started(browser, server, "/restart?room=r&x=%C3%A9", retryBase=100)
            await until(page, "count('open') === 4 && count('message') === 8")
            seen = await events(page)
            assert page.errors == []
    # Each attempt kept the page's own query and resumed from the last offset it saw, if any
    # since the last reset.
    assert script.attempts["/restart"] == [
        {"room": "r", "x": "é"},
        {"room": "r", "x": "é", "since": "2"},
        {"room": "r", "x": "é", "since": "3"},
        {"room": "r", "x": "é"},
    ]
    closes = [detail for name, detail in seen if name == "close"]
    assert [(c["code"], c["reason"], c["willRetry"]) for c in closes] == [
        (1012, "restarting", True),
        (1012, "restarting again", True),
        (1012, "restarting once more", True),
    ]
    # Full jitter: anywhere from 0 up to retryBase * 2^n, n the failures in a row.
    assert 0 <= closes[0]["delay"] <= 100
    assert 0 <= closes[1]["delay"] <= 200
    assert [(name, detail) for name, detail in seen if name != "close"] == [
        ("open", {"url": f"ws://127.0.0.1:{server.port}/restart?room=r&x=%C3%A9"}),
        ("reset", welcome(False)),
        ("message", welcome(False)),
        ("message", {"offset": "1"}),
        ("message", {"offset": "2"}),
        ("open", {"url": f"ws://127.0.0.1:{server.port}/restart?room=r&x=%C3%A9&since=2"}),
        ("recovered", welcome(True)),  # exact: nothing to reload; the replay follows
        ("message", welcome(True)),
        ("message", {"offset": "3"}),  # and not "2" a second time
        ("open", {"url": f"ws://127.0.0.1:{server.port}/restart?room=r&x=%C3%A9&since=3"}),
        ("reset", welcome(False)),  # not exact: the app reloads its state
        ("message", welcome(False)),
        ("open", {"url": f"ws://127.0.0.1:{server.port}/restart?room=r&x=%C3%A9"}),
        ("reset", welcome(False)),
        ("message", welcome(False)),
        ("message", {"offset": "1000"}),
    ]


@pytest.mark.parametrize(
    ("route", "code", "reason", "status"),
    [("/deny", 4403, "not for you", 403), ("/policy", 1008, "you were warned", None)],
)
async def test_a_denial_stops_the_client_and_says_why(
    chromium: str, tmp_path: Path, route: str, code: int, reason: str, status: int | None
) -> None:
    app, script = feed_app()
    with trio.fail_after(20):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            page = await started(browser, server, route, retryBase=1)
            await until(page, "count('denied') === 1")
            seen = await events(page)
            # Closed for good: no reconnect is waiting (a retry would be in state "waiting").
            assert await page.evaluate("socket.state") == "closed"
            assert page.errors == []
    assert seen == [
        # (A denial sent as a close comes in a socket the server accepted only to close it.)
        ("open", {"url": f"ws://127.0.0.1:{server.port}{route}"}),
        ("close", {"code": code, "reason": reason, "willRetry": False, "delay": None}),
        ("denied", {"code": code, "reason": reason, "status": status}),
    ]
    assert len(script.attempts[route]) == 1


async def test_a_server_out_of_reach_is_tried_again_and_again(
    chromium: str, tmp_path: Path
) -> None:
    app, _ = feed_app()
    with trio.fail_after(20):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            with trio.socket.socket() as unused:  # a port nobody listens on
                await unused.bind(("127.0.0.1", 0))
                port = unused.getsockname()[1]
            page = await started(browser, server, f"ws://127.0.0.1:{port}/", retryBase=20)
            await until(page, "count('close') >= 3")
            await page.evaluate("socket.close()")
            seen = await events(page)
    closes = [detail for name, detail in seen if name == "close"]
    assert [(c["code"], c["willRetry"]) for c in closes[:3]] == [(1006, True)] * 3
    assert closes[-1] == {"code": 1000, "reason": "", "willRetry": False, "delay": None}
    assert "open" not in names(seen)


async def test_a_silent_server_is_given_up_by_the_heartbeat_and_reconnected(
    chromium: str, tmp_path: Path
) -> None:
    app, script = feed_app()
    with trio.fail_after(20):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            page = await started(browser, server, "/silent", silenceTimeout=500, retryBase=1)
            await until(page, "count('message') === 1")
            # The page gave the silent socket up with a Close of its own, which the server saw.
            with trio.fail_after(STEP):
                while not script.closes.get("/silent"):
                    script.closed = trio.Event()
                    await script.closed.wait()
            seen = await events(page)
            assert page.errors == []
    assert script.closes["/silent"][0] == 4000  # (the second one ended with the test)
    assert [name for name, _ in seen] == ["open", "close", "open", "reset", "message"]
    close = seen[1][1]
    assert (close["code"], close["reason"], close["willRetry"]) == (
        1006,
        "no message for 0.5 s",
        True,
    )


async def test_pings_answered_keep_a_quiet_socket_alive_past_the_silence_timeout(
    chromium: str, tmp_path: Path
) -> None:
    app, script = feed_app()
    with trio.fail_after(20):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            # Pongs every 100 ms, nothing else: a silence timeout of 400 ms must not fire.
            options = {"pingInterval": 100, "silenceTimeout": 400}
            page = await started(browser, server, "/normal", **options)
            await until(page, "count('message') >= 5 + 8")  # the 5 messages, then 8 pongs
            seen = await events(page)
    assert "close" not in names(seen)
    assert script.pings >= 8
    assert len(script.attempts["/normal"]) == 1


async def test_the_backoff_doubles_to_its_cap_and_starts_over_after_a_stable_connection(
    chromium: str, tmp_path: Path
) -> None:
    app, script = feed_app()
    with trio.fail_after(20):
        async with serving(app) as server, launch(chromium, tmp_path / "profile") as browser:
            page = await browser.new_page()
            await page.navigate(server.url("/", scheme="http"))
            # The top of each draw, to read the ceiling off each delay.
            await page.evaluate("Math.random = () => 0.999")
            options = {"retryBase": 100, "retryCap": 300, "stableAfter": 500, "pingInterval": 100}
            await page.evaluate(f"start('/backoff', {json.dumps(options)})")
            await until(page, "count('open') === 5")
            seen = await events(page)
    delays = [detail["delay"] for name, detail in seen if name == "close"]
    # 100, 200, then the cap (300 of 400); after a socket open for 600 ms, 100 again.
    assert delays == pytest.approx([99.9, 199.8, 299.7, 99.9])
    assert len(script.attempts["/backoff"]) == 5


# -- the example of the docs --------------------------------------------------------------------


def docs_example() -> Any:
    """A fresh copy of docs/snippets/client_feed.py (docs/browser-client.md's example)."""
    spec = importlib.util.spec_from_file_location("client_feed", SNIPPETS / "client_feed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_docs_example_page_logs_in_talks_and_comes_back_after_a_restart(
    chromium: str, tmp_path: Path
) -> None:
    example = docs_example()
    resumed_from = []

    @example.app.before_websocket
    async def note(ws: WebSocket) -> None:
        resumed_from.append(ws.query_params.get("since"))

    with trio.fail_after(30):
        async with launch(chromium, tmp_path / "profile") as browser:
            page = await browser.new_page()
            async with serving(example.app) as server:
                await page.navigate(server.url("/", scheme="http"))
                await see(page, "#status", "please log in (log in first)")
                await page.navigate(server.url("/?token=let-me-in", scheme="http"))
                await see(page, "#status", "connected")
                await page.type("#say [name=text]", "hello")
                await page.press_enter()
                await see(page, "#messages li", "hello")
                example.feed.publish({"type": "said", "text": "from elsewhere"})
                await see(page, "#messages li", "from elsewhere")
                # (Marked, to tell a resume, which keeps them, from a reset, which redraws.)
                await page.evaluate(
                    "document.querySelectorAll('li').forEach((li) => li.dataset.kept = 1)"
                )
            # The server restarts (a shutdown closes with 1001); meanwhile the feed goes on.
            await until(
                page, "document.querySelector('#status').textContent.startsWith('reconnecting')"
            )
            example.feed.publish({"type": "said", "text": "while you were away"})
            async with serving(example.app, port=server.port):
                await see(page, "#status", "connected")
                await see(page, "#messages li", "while you were away")
                example.feed.publish({"type": "said", "text": "back"})
                await see(page, "#messages li", "back")
                # Resumed, not reloaded: each message once, in order, the first two kept.
                assert await page.texts("#messages li") == [
                    "hello",
                    "from elsewhere",
                    "while you were away",
                    "back",
                ]
                kept = "Array.from(document.querySelectorAll('li'), (li) => li.dataset.kept)"
                assert await page.evaluate(kept) == ["1", "1", None, None]
            assert page.errors == []
    assert resumed_from == [None, None, "2"]  # denied; logged in; back after the restart


# -- serving the module ------------------------------------------------------------------------


async def test_the_module_is_served_as_javascript_with_an_etag() -> None:
    app = App()
    app.serve_client("/static/trioweb.js")
    async with TestClient(app) as client:
        response = await client.get("/static/trioweb.js")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.content == client_source()
        assert "export function connect(" in response.text
        etag = response.headers["etag"]
        # The copy the page has is still good: 304, no body.
        again = await client.get("/static/trioweb.js", headers={"if-none-match": etag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
        weak = await client.get("/static/trioweb.js", headers={"if-none-match": f"W/{etag}"})
        assert weak.status_code == 304
        stale = await client.get("/static/trioweb.js", headers={"if-none-match": '"old", "x"'})
        assert stale.status_code == 200
        head = await client.head("/static/trioweb.js")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == str(len(client_source()))


def test_the_wheel_takes_the_module_along() -> None:
    # hatchling puts every file of a listed package in the wheel (client.js with the .py files),
    # unless the config narrows it down; it is where client_source() reads it.
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["trioweb"]
    assert not {"only-include", "exclude", "include", "only-packages"} & wheel.keys()
    assert (Path(trioweb.__file__).parent / "static" / "client.js").read_bytes() == client_source()
