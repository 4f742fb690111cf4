"""Denials a browser can read: ``browser_denials="close"``.

Browsers hide the HTTP response of a refused handshake from the page, which sees close code 1006
as for a network failure; a client that reconnects cannot tell "log in" from "the server is
down". Under ``browser_denials="close"``, a handshake with an ``Origin`` header (browsers always
send one) refused with a 4xx status is accepted and closed at once with ``4000 + status`` and the
denial's text as the reason; other clients still get the HTTP response, and 5xx denials stay
HTTP. Checked in-process (the test client), over a real server with trio-websocket (with and
without ``Origin``, and in the access log), and in headless Chromium, where a page sees the code
and the reason in its ``CloseEvent``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from cdp import launch
from helpers import HOST, Server, closed_with, serving
from trio_websocket import ConnectionClosed, ConnectionRejected

from trioweb import App, HTTPException, WebSocket, WebSocketClose, abort
from trioweb.testing import TestClient, WebSocketDenied

ORIGIN = {"origin": "http://testserver"}  # the test client's own host: the origin check passes
LONG = "é" * 100  # 200 bytes of UTF-8: over the 123 a close reason may carry


def denying_app(**options: Any) -> tuple[App, list[tuple[int | None, int | None, str | None]]]:
    """An app with a route for each way of refusing a handshake; what its after hook saw."""
    app = App(**options)
    seen: list[tuple[int | None, int | None, str | None]] = []

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        seen.append((ws.denial_status, ws.close_code, ws.close_reason))

    @app.before_websocket
    async def auth(ws: WebSocket) -> None:
        if ws.path == "/hooked" and "token" not in ws.query_params:
            abort(401, "log in first")

    @app.websocket("/hooked")
    async def hooked(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send("welcome")

    @app.websocket("/abort")
    async def aborted(ws: WebSocket) -> None:
        abort(403, "not yours")

    @app.websocket("/raise")
    async def raised(ws: WebSocket) -> None:
        raise HTTPException(429, "slow down", {"retry-after": "5"})

    @app.websocket("/reject")
    async def rejected(ws: WebSocket) -> None:
        await ws.reject(409, "taken")

    @app.websocket("/reject-empty")
    async def rejected_empty(ws: WebSocket) -> None:
        await ws.reject(403)

    @app.websocket("/returned")
    async def returned(ws: WebSocket) -> Any:
        return "gone", 410

    @app.websocket("/close")
    async def closed(ws: WebSocket) -> None:
        await ws.close(1000, "no room for you")

    @app.websocket("/close-raised")
    async def close_raised(ws: WebSocket) -> None:
        raise WebSocketClose(4001, "bye")

    @app.websocket("/long")
    async def long(ws: WebSocket) -> None:
        abort(400, LONG)

    @app.websocket("/unavailable")
    async def unavailable(ws: WebSocket) -> None:
        abort(503, "come back later")

    @app.websocket("/broken")
    async def broken(ws: WebSocket) -> None:
        raise RuntimeError("a bug")

    return app, seen


#: Each way of refusing, the status it refuses with, and the text a browser reads.
REFUSALS = [
    ("/hooked", 401, "log in first"),
    ("/abort", 403, "not yours"),
    ("/raise", 429, "slow down"),
    ("/reject", 409, "taken"),
    ("/reject-empty", 403, "Forbidden"),  # no body: the status phrase
    ("/returned", 410, "gone"),
    # close() and WebSocketClose before accept refuse with 403; their code is not sent.
    ("/close", 403, "no room for you"),
    ("/close-raised", 403, "bye"),
    ("/nowhere", 404, "no WebSocket route for /nowhere"),
]


@pytest.mark.parametrize(("path", "status", "reason"), REFUSALS)
async def test_a_browser_reads_each_4xx_denial_as_a_close_4000_plus_status(
    path: str, status: int, reason: str
) -> None:
    app, seen = denying_app(browser_denials="close")
    async with TestClient(app) as client:
        async with client.websocket(path, headers=ORIGIN) as ws:
            closed = await closed_with(ws)
        assert (closed.code, closed.reason) == (4000 + status, reason)
        # A client that sends no Origin is no browser: it gets the HTTP response, as by default.
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket(path):
                pass
        assert denied.value.status_code == status
    if path != "/nowhere":  # (no route, no hooks)
        # The after hooks can tell a denial from a close, however it reached the client.
        assert seen == [(status, 4000 + status, reason), (status, None, None)]


async def test_by_default_browsers_get_the_http_response_too() -> None:
    app, seen = denying_app()
    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/hooked", headers=ORIGIN):
                pass
        assert (denied.value.status_code, denied.value.body) == (401, b"log in first")
        async with client.websocket("/hooked?token=t", headers=ORIGIN) as ws:
            assert await ws.receive() == "welcome"
    assert seen == [(401, None, None), (None, 1000, "")]


async def test_5xx_denials_stay_http_responses() -> None:
    app, seen = denying_app(browser_denials="close")
    async with TestClient(app) as client:
        for path, status in [("/unavailable", 503), ("/broken", 500)]:
            with pytest.raises(WebSocketDenied) as denied:
                async with client.websocket(path, headers=ORIGIN):
                    pass
            assert denied.value.status_code == status
    assert seen == [(503, None, None), (500, None, None)]


async def test_an_origin_refused_by_the_origin_check_is_told_why() -> None:
    app, _ = denying_app(browser_denials="close")
    async with TestClient(app) as client:
        async with client.websocket("/hooked", headers={"origin": "https://evil.example"}) as ws:
            closed = await closed_with(ws)
    assert (closed.code, closed.reason) == (4403, "origin not allowed: https://evil.example")


async def test_the_reason_is_cut_to_123_bytes_of_utf8() -> None:
    app, _ = denying_app(browser_denials="close")
    async with TestClient(app) as client:
        async with client.websocket("/long", headers=ORIGIN) as ws:
            closed = await closed_with(ws)
    assert closed.code == 4400
    assert closed.reason == "é" * 61  # 122 bytes: a 62nd "é" would cut a character in two


async def test_the_option_is_set_per_route_over_the_apps() -> None:
    app = App(browser_denials="close")

    @app.websocket("/app-default")
    async def app_default(ws: WebSocket) -> None:
        abort(401)

    @app.websocket("/http", browser_denials="http")
    async def http(ws: WebSocket) -> None:
        abort(401)

    other = App()

    @other.websocket("/close", browser_denials="close")
    async def close(ws: WebSocket) -> None:
        abort(401)

    async with TestClient(app) as client, TestClient(other) as other_client:
        async with client.websocket("/app-default", headers=ORIGIN) as ws:
            assert (await closed_with(ws)).code == 4401
        with pytest.raises(WebSocketDenied):
            async with client.websocket("/http", headers=ORIGIN):
                pass
        async with other_client.websocket("/close", headers=ORIGIN) as ws:
            closed = await closed_with(ws)
        assert (closed.code, closed.reason) == (4401, "Unauthorized")


async def test_a_denial_by_close_accepts_with_the_first_subprotocol_offered() -> None:
    # Browsers drop a socket accepted without one of the subprotocols they offered, and a token
    # sent as a subprotocol (["access_token", token]) is a common way to authenticate.
    app, _ = denying_app(browser_denials="close")
    async with TestClient(app) as client:
        offered = ["access_token", "not-a-valid-token"]
        async with client.websocket("/hooked", offered, headers=ORIGIN) as ws:
            assert ws.subprotocol == "access_token"
            assert (await closed_with(ws)).code == 4401


def test_a_misspelt_value_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="browser_denials must be 'http' or 'close'"):
        App(browser_denials="closed")  # type: ignore[arg-type]
    app = App()
    with pytest.raises(ValueError, match="browser_denials must be 'http' or 'close'"):
        app.websocket("/x", browser_denials="HTTP")  # type: ignore[arg-type]


# -- over a real server ------------------------------------------------------------------------


def open_socket(server: Server, path: str, origin: bool) -> Any:
    headers = [(b"origin", f"http://{HOST}:{server.port}".encode())] if origin else []
    return trio_websocket.open_websocket_url(
        server.url(path), extra_headers=headers, connect_timeout=2, disconnect_timeout=2
    )


async def test_over_a_real_server_with_and_without_origin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, seen = denying_app(browser_denials="close")
    access = logging.getLogger("tests.access")
    caplog.set_level(logging.INFO, "tests.access")
    with trio.fail_after(10):
        async with serving(app, accesslog=access, access_log_format='"%(r)s" %(s)s') as server:
            async with open_socket(server, "/hooked", origin=True) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert (closed.value.reason.code, closed.value.reason.reason) == (
                4401,
                "log in first",
            )
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_socket(server, "/hooked", origin=False):
                    pass
            assert (rejected.value.status_code, rejected.value.body) == (401, b"log in first")
            # 5xx: an HTTP response, Origin or not.
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_socket(server, "/unavailable", origin=True):
                    pass
            assert rejected.value.status_code == 503
            # And a socket that is let in works as ever.
            async with open_socket(server, "/hooked?token=t", origin=True) as ws:
                assert await ws.get_message() == "welcome"
        await server.ended.wait()
    assert seen == [
        (401, 4401, "log in first"),
        (401, None, None),
        (503, None, None),
        (None, 1000, ""),
    ]
    # The access log says the handshake was refused, with its status, both ways (not the 101
    # that carried the close).
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.access"]
    assert lines == [
        '"GET /hooked 1.1" 401',
        '"GET /hooked 1.1" 401',
        '"GET /unavailable 1.1" 503',
        '"GET /hooked 1.1" 101',
    ]


# -- in a browser ----------------------------------------------------------------------------

PAGE = """<!doctype html><title>denials</title><body><script>
window.closeOf = (path, protocols) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}${path}`, protocols);
    ws.onclose = (event) => resolve({code: event.code, reason: event.reason});
});
</script></body>"""


async def test_a_page_denied_with_401_sees_4401_and_the_reason(
    chromium: str, tmp_path: Path
) -> None:
    closing, _ = denying_app(browser_denials="close")
    default, _ = denying_app()
    for app in (closing, default):

        @app.get("/")
        async def page(request: Any) -> str:
            return PAGE

    with trio.fail_after(30):
        async with (
            serving(closing) as server,
            serving(default) as server_by_default,
            launch(chromium, tmp_path / "profile") as browser,
        ):
            page = await browser.new_page()
            await page.navigate(server.url("/", scheme="http"))
            assert await page.evaluate("closeOf('/hooked')") == {
                "code": 4401,
                "reason": "log in first",
            }
            # A token sent as a subprotocol, refused: the page still reads why.
            assert await page.evaluate("closeOf('/hooked', ['access_token', 'bad'])") == {
                "code": 4401,
                "reason": "log in first",
            }
            assert await page.evaluate("closeOf('/reject-empty')") == {
                "code": 4403,
                "reason": "Forbidden",
            }
            # What the option is for: by default, the page cannot tell a 401 from a dead server.
            await page.navigate(server_by_default.url("/", scheme="http"))
            assert await page.evaluate("closeOf('/hooked')") == {"code": 1006, "reason": ""}
            assert page.errors == []
