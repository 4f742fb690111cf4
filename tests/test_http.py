"""HTTP basics: requests, responses, conversions, limits, hooks and error handlers."""

import logging

import pytest
import trio
from helpers import HOST, serving

from trioweb import (
    App,
    FileResponse,
    HTMLResponse,
    HTTPException,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Request,
    Response,
    abort,
)
from trioweb.testing import TestClient


async def test_request_data():
    app = App()

    @app.post("/echo/{name}")
    async def echo(request: Request, name: str):
        return {
            "method": request.method,
            "path": request.path,
            "url": request.url,
            "name": name,
            "params": request.path_params,
            "query": request.query_params.getlist("a"),
            "header": request.headers["X-Thing"],
            "cookies": request.cookies,
            "client": list(request.client),
            "json": await request.json(),
            "text": await request.text(),
            "body": len(await request.body()),
        }

    async with TestClient(app) as client:
        response = await client.post(
            "/echo/bob?a=1",
            params={"a": "2"},
            headers={"x-thing": "t", "cookie": "k=v"},
            json={"x": [1]},
        )
    assert response.status_code == 200
    assert response.json() == {
        "method": "POST",
        "path": "/echo/bob",
        "url": "http://testserver/echo/bob?a=1&a=2",
        "name": "bob",
        "params": {"name": "bob"},
        "query": ["1", "2"],
        "header": "t",
        "cookies": {"k": "v"},
        "client": ["127.0.0.1", 50000],
        "json": {"x": [1]},
        "text": '{"x": [1]}',
        "body": 10,
    }


@pytest.mark.parametrize(
    ("returned", "status", "content_type", "body"),
    [
        ("<p>hi</p>", 200, "text/html; charset=utf-8", b"<p>hi</p>"),
        ({"a": 1}, 200, "application/json", b'{"a":1}'),
        ([1, "é"], 200, "application/json", '[1,"é"]'.encode()),
        (b"\x00", 200, "application/octet-stream", b"\x00"),
        (("created", 201), 201, "text/html; charset=utf-8", b"created"),
        (({"e": 1}, 400, {"x-extra": "1"}), 400, "application/json", b'{"e":1}'),
        (None, 204, None, b""),
        (PlainTextResponse("plain", 202), 202, "text/plain; charset=utf-8", b"plain"),
        (HTMLResponse("<b>", headers={"x-a": "b"}), 200, "text/html; charset=utf-8", b"<b>"),
        (JSONResponse({"k": None}, status_code=418), 418, "application/json", b'{"k":null}'),
        (Response(b"raw", media_type="image/png"), 200, "image/png", b"raw"),
    ],
)
async def test_handler_return_values_become_responses(returned, status, content_type, body):
    app = App()

    @app.get("/")
    async def index(request: Request):
        return returned

    async with TestClient(app) as client:
        response = await client.get("/")
    assert response.status_code == status
    assert response.headers.get("content-type", None) == (
        content_type if content_type != "application/json" else "application/json; charset=utf-8"
    )
    assert response.content == body


async def test_returning_something_that_is_not_a_response_is_a_logged_500(caplog):
    app = App()

    @app.get("/")
    async def index(request: Request):
        return 42

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client:
            response = await client.get("/")
    assert response.status_code == 500
    assert "int" in str(caplog.records[0].exc_info[1])


async def test_redirect_and_cookies():
    app = App()

    @app.get("/old")
    async def old(request: Request):
        response = RedirectResponse("/new place", status_code=301)
        response.set_cookie("a", "1")
        response.set_cookie("b", "x y", max_age=60, secure=True)
        return response

    async with TestClient(app) as client:
        response = await client.get("/old")
    assert response.status_code == 301
    assert response.headers["location"] == "/new%20place"
    assert response.headers.getlist("set-cookie") == [
        "a=1; Path=/; HttpOnly; SameSite=lax",
        "b=x%20y; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=lax",
    ]


async def test_file_response_streams_a_file_and_404s_a_missing_one(tmp_path):
    app = App()
    big = tmp_path / "big.txt"
    big.write_bytes(b"0123456789" * 20_000)  # several chunks

    @app.get("/file/{name}")
    async def file(request: Request, name: str):
        return FileResponse(tmp_path / name, filename="download.txt" if name == "big.txt" else None)

    async with TestClient(app) as client:
        response = await client.get("/file/big.txt")
        head = await client.head("/file/big.txt")
        missing = await client.get("/file/nope.txt")
    assert response.status_code == 200
    assert response.content == big.read_bytes()
    assert response.headers["content-length"] == str(200_000)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"] == "attachment; filename*=utf-8''download.txt"
    assert "last-modified" in response.headers
    assert head.content == b"" and head.headers["content-length"] == "200000"
    assert missing.status_code == 404


async def test_body_over_the_limit_is_413():
    app = App(max_body_size=10)

    @app.post("/upload")
    async def upload(request: Request):
        return str(len(await request.body()))

    @app.post("/big", max_body_size=100)
    async def big(request: Request):
        return str(len(await request.body()))

    async with TestClient(app) as client:
        assert (await client.post("/upload", content=b"x" * 10)).text == "10"
        too_big = await client.post("/upload", content=b"x" * 11)
        assert (await client.post("/big", content=b"x" * 50)).text == "50"
    assert too_big.status_code == 413
    assert "10 bytes" in too_big.text


async def test_body_over_the_limit_without_content_length_is_413():
    app = App(max_body_size=10)

    @app.post("/upload")
    async def upload(request: Request):
        return str(len(await request.body()))

    chunks = [b"x" * 6, b"x" * 6]
    sent = []

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/upload", "headers": []}
    await app(scope, receive, send)
    assert sent[0]["status"] == 413


async def test_malformed_json_is_400_with_a_clear_message():
    app = App()

    @app.post("/j")
    async def j(request: Request):
        return await request.json()

    async with TestClient(app) as client:
        response = await client.post("/j", content=b"{nope")
    assert response.status_code == 400
    assert response.text.startswith("malformed JSON in request body")


async def test_undecodable_text_is_400():
    app = App()

    @app.post("/t")
    async def t(request: Request):
        return await request.text()

    async with TestClient(app) as client:
        response = await client.post("/t", content=b"\xff\xfe")
    assert response.status_code == 400


async def test_abort_and_http_exception_become_responses():
    app = App()

    @app.get("/teapot")
    async def teapot(request: Request):
        abort(418, "I'm a teapot", headers={"x-brew": "no"})

    @app.get("/default")
    async def default(request: Request):
        raise HTTPException(409)

    async with TestClient(app) as client:
        teapot_response = await client.get("/teapot")
        default_response = await client.get("/default")
    assert teapot_response.status_code == 418
    assert teapot_response.text == "I'm a teapot"
    assert teapot_response.headers["x-brew"] == "no"
    assert (default_response.status_code, default_response.text) == (409, "Conflict")


def test_http_exception_needs_an_error_status():
    with pytest.raises(ValueError, match="400-599"):
        HTTPException(200)


async def test_unhandled_error_is_a_500_logged_once(caplog):
    app = App()

    @app.get("/boom")
    async def boom(request: Request):
        raise RuntimeError("kaboom")

    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    assert [type(r.exc_info[1]) for r in caplog.records if r.exc_info] == [RuntimeError]


async def test_hooks_wrap_every_request():
    app = App()
    calls = []

    @app.before_request
    async def before(request: Request):
        calls.append(("before", request.path))
        if request.path == "/blocked":
            return PlainTextResponse("blocked", 403)
        return None

    @app.after_request
    async def after(request: Request, response: Response):
        calls.append(("after", response.status_code))
        response.set_header("x-seen", "yes")
        return response

    @app.get("/ok")
    async def ok(request: Request):
        calls.append(("handler", request.path))
        return "ok"

    async with TestClient(app) as client:
        ok_response = await client.get("/ok")
        blocked = await client.get("/blocked")
    assert ok_response.headers["x-seen"] == "yes"
    assert (blocked.status_code, blocked.headers["x-seen"]) == (403, "yes")
    assert calls == [
        ("before", "/ok"),
        ("handler", "/ok"),
        ("after", 200),
        ("before", "/blocked"),
        ("after", 403),
    ]


def app_with_an_after_request_hook_returning(value: object) -> App:
    app = App()

    @app.after_request
    async def broken_hook(request: Request, response: Response):
        return value

    @app.get("/")
    async def index(request: Request):
        return "ok"

    return app


def hook_failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioweb" and "broken_hook" in r.getMessage()]


async def test_an_after_request_hook_returning_a_non_response_is_a_logged_500(caplog):
    # As a handler that returns something unusable: a 500, logged, and nothing escapes.
    app = app_with_an_after_request_hook_returning(42)
    with caplog.at_level(logging.ERROR, logger="trioweb"):
        async with TestClient(app) as client:
            response = await client.get("/")
            assert (await client.head("/")).status_code == 500
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    [first, _] = hook_failures(caplog)
    assert first.exc_info is not None and isinstance(first.exc_info[1], TypeError)
    assert "int" in str(first.exc_info[1])


async def test_an_after_request_hook_returning_a_non_response_over_a_real_server(caplog):
    app = app_with_an_after_request_hook_returning(object())
    with caplog.at_level(logging.ERROR), trio.fail_after(20):
        async with serving(app) as server:
            stream = await trio.open_tcp_stream(HOST, server.port)
            async with stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                received = b""
                while chunk := await stream.receive_some():
                    received += chunk
    assert received.startswith(b"HTTP/1.1 500 ")
    assert received.endswith(b"Internal Server Error")
    assert len(hook_failures(caplog)) == 1
    # Nothing reached hypercorn ("Error in ASGI Framework").
    assert [r for r in caplog.records if r.name.startswith("hypercorn")] == []


async def test_errorhandler_answers_http_errors():
    app = App()

    class Missing(Exception):
        pass

    @app.errorhandler(Missing)
    async def missing(request: Request, exc: Missing):
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.errorhandler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"status": exc.status_code}, status_code=exc.status_code)

    @app.get("/thing")
    async def thing(request: Request):
        raise Missing("no thing")

    async with TestClient(app) as client:
        thing_response = await client.get("/thing")
        not_found = await client.get("/other")
    assert (thing_response.status_code, thing_response.json()) == (404, {"error": "no thing"})
    assert (not_found.status_code, not_found.json()) == (404, {"status": 404})
