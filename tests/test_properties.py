"""Property-based tests (issue 4): no input reaching the app makes it misbehave.

Arbitrary paths, query strings, headers, cookies, HTTP bodies, WebSocket payloads and close
codes go through the in-process test client. For every one of them:

- a handler never sees an exception that is not one of the documented types (each handler
  records, through ``PROBE.watching()``, any other exception that crosses it);
- the app never raises out of ASGI (the test client would raise it here) and logs no error;
- the outcome is the documented one: 200/404/405 for routing, 200/400/413 for bodies, 1007
  for bad JSON, 1003 for the wrong message type, never a 500 or a 1011.

The tests are plain functions that call ``trio.run`` per example (pytest-trio's ``trio_mode``
only takes over ``async def`` tests), so hypothesis drives and shrinks real runs.

Known failures are pinned with ``@example`` so they reproduce without luck. Hypothesis runs the
explicit examples first and stops at the first that fails: the random search of a property only
runs once its pinned examples pass.
"""

from __future__ import annotations

import base64
import contextlib
import encodings.aliases
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
import trio
from helpers import closed_with
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trioweb import (
    App,
    ClientDisconnect,
    HTTPException,
    PlainTextResponse,
    Request,
    WebSocket,
    WebSocketClose,
    WebSocketDisconnect,
)
from trioweb.testing import TestClient, WebSocketDenied

MAX_CLOSE_REASON_BYTES = 123


def fuzz(max_examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings for this file: no deadline (trio.run per example), no database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,  # no .hypothesis/ directory in the tree; failures are pinned below
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- the probe: what handlers saw ----------------------------------------------------------

HTTP_DOCUMENTED = (HTTPException, ClientDisconnect)
WS_DOCUMENTED = (WebSocketDisconnect, WebSocketClose, HTTPException)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


class Probe:
    """Shared between a test and the handlers of its app, reset for every example."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, args: Any = None) -> None:
        #: Exceptions of undocumented types that crossed a handler.
        self.unexpected: list[BaseException] = []
        #: What handlers recorded about their calls.
        self.calls: list[Any] = []
        #: Input for the handler, set by the test.
        self.args = args

    @contextlib.contextmanager
    def watching(self, documented: tuple[type[BaseException], ...]) -> Iterator[None]:
        """Record any exception of an undocumented type that leaves the block (and re-raise)."""
        try:
            yield
        except BaseException as exc:
            self.unexpected.extend(
                leaf
                for leaf in _leaves(exc)
                if isinstance(leaf, Exception) and not isinstance(leaf, documented)
            )
            raise


PROBE = Probe()


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


def run_with_client(app: App, scenario: Callable[[TestClient], Awaitable[None]]) -> None:
    """Run ``scenario`` against ``app`` in a fresh trio run; fail on anything the app hid.

    Undocumented exceptions seen by handlers and errors the app logged are reported first:
    they say why a scenario saw a 500 or a 1011.
    """
    errors = _ErrorLog()
    errors.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("trioweb")
    logger.addHandler(errors)
    failure: BaseException | None = None

    async def main() -> None:
        async with TestClient(app, receive_timeout=5) as client:
            await scenario(client)

    try:
        trio.run(main)
    except BaseException as exc:  # reported after what the app saw
        failure = exc
    finally:
        logger.removeHandler(errors)
    assert not PROBE.unexpected, f"a handler saw undocumented exception(s): {PROBE.unexpected!r}"
    assert not errors.records, "the app logged errors:\n" + "\n".join(errors.records)
    if failure is not None:
        raise failure


# -- paths ---------------------------------------------------------------------------------

UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
FLOAT_RE = r"[0-9]+(?:\.[0-9]+)?"
GET = frozenset({"GET", "HEAD"})

#: (name, pattern, methods, what the docs say it matches, converter of each parameter).
#: The reference regexes are matched in full (``re.fullmatch``) and ``{name:path}`` takes
#: "the rest of the path, slashes included", newlines too.
ROUTES: list[tuple[str, str, frozenset[str], str, dict[str, Callable[[str], Any]]]] = [
    ("item", "/items/{item_id:int}", GET, r"/items/(?P<item_id>[0-9]+)", {"item_id": int}),
    ("price", "/prices/{price:float}", GET, rf"/prices/(?P<price>{FLOAT_RE})", {"price": float}),
    ("key", "/keys/{key:uuid}", GET, rf"/keys/(?P<key>{UUID_RE})", {"key": uuid.UUID}),
    ("user", "/users/{name}", GET | {"POST"}, r"/users/(?P<name>[^/]+)", {"name": str}),
    (
        "user_post",
        "/users/{name:str}/posts/{post_id:int}",
        GET,
        r"/users/(?P<name>[^/]+)/posts/(?P<post_id>[0-9]+)",
        {"name": str, "post_id": int},
    ),
    ("file", "/files/{rest:path}", GET, r"/files/(?P<rest>.*)", {"rest": str}),
    (
        "mixed",
        "/mixed/{a}/{b:float}/{c:path}",
        GET,
        rf"/mixed/(?P<a>[^/]+)/(?P<b>{FLOAT_RE})/(?P<c>.*)",
        {"a": str, "b": float, "c": str},
    ),
]

ROUTING_APP = App()


def _http_recorder(name: str) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Request, **params: Any) -> Any:
        with PROBE.watching(HTTP_DOCUMENTED):
            PROBE.calls.append((name, params, request.path))
            return PlainTextResponse(name)

    return handler


def _ws_recorder(name: str) -> Callable[..., Awaitable[Any]]:
    async def handler(ws: WebSocket, **params: Any) -> None:
        with PROBE.watching(WS_DOCUMENTED):
            PROBE.calls.append((name, params, ws.path))
            await ws.accept()  # returning closes with 1000

    return handler


for _name, _pattern, _methods, _, _ in ROUTES:
    ROUTING_APP.route(_pattern, sorted(_methods - {"HEAD"}))(_http_recorder(_name))
    ROUTING_APP.websocket(_pattern)(_ws_recorder(_name))


def reference_match(path: str) -> list[tuple[str, frozenset[str], dict[str, Any]]]:
    """Every route the docs say ``path`` matches, in table order, with converted values."""
    found = []
    for name, _, methods, regex, converters in ROUTES:
        match = re.fullmatch(regex, path, re.DOTALL)
        if match is None:
            continue
        try:
            params = {key: converters[key](text) for key, text in match.groupdict().items()}
        except ValueError:  # e.g. an int over Python's 4300-digit limit: no match (404)
            continue
        found.append((name, methods, params))
    return found


def expected_path(target: str) -> str:
    """The decoded path a server puts in the scope for a request target."""
    return unquote(target.partition("#")[0].partition("?")[0])


PATH_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\t\r\n")

segments = st.one_of(
    st.sampled_from(
        [
            "items",
            "prices",
            "keys",
            "users",
            "posts",
            "files",
            "mixed",
            "",
            ".",
            "..",
            "%",
            "%2F",
            "%2f",
            "%00",
            "%0A",
            "%0a",
            "%20",
            "+",
            "%ZZ",
            "%E9",
            "%C3%A9",
            "%FF",
            "%25",
            "%3F",
            "%23",
            "{",
            "}",
            "{name}",
            "{rest:path}",
            "?",
            "#",
            "?a=1#b",
            "\x00",
            "\u00e9",
            "\u2603",
            "\U0001d11e",
            "\uff10",  # FULLWIDTH DIGIT ZERO: a digit to str.isdigit, not to the int regex
            "\u0661",  # ARABIC-INDIC DIGIT ONE
            ";",
            "[",
            "]",
            "9" * 5000,  # an int over Python's default limit on digits
        ]
    ),
    st.integers(min_value=0, max_value=10**30).map(str),
    st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,6})?", fullmatch=True),
    st.floats().map(str),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text(PATH_CHARS, max_size=12),
    st.integers(1, 3000).map(lambda n: "x" * n),  # very long segments
)


CONVERTER_VALUES = {
    "int": st.integers(0, 10**6).map(str),
    "float": st.from_regex(FLOAT_RE, fullmatch=True),
    "uuid": st.uuids().map(str),
    "str": st.text(PATH_CHARS, min_size=1, max_size=8).filter(lambda text: "/" not in text),
    "path": st.lists(segments, max_size=3).map("/".join),
}


def encoded(draw: st.DrawFn, segment: str) -> str:
    """``segment`` as it is, or percent-encoded (keeping or encoding its slashes)."""
    how = draw(st.sampled_from(["raw", "raw", "quote", "quote-all"]))
    if how == "quote":
        return quote(segment, safe="/")
    if how == "quote-all":
        return quote(segment, safe="")
    return segment


@st.composite
def paths(draw: st.DrawFn) -> str:
    """A path near one of the routes (typed values, odd values, odd ends), or any path."""
    if draw(st.booleans()):
        return "/" + "/".join(encoded(draw, s) for s in draw(st.lists(segments, max_size=6)))
    pattern = draw(st.sampled_from([route[1] for route in ROUTES]))
    parts = []
    for piece in pattern.split("/")[1:]:
        param = re.fullmatch(r"{\w+(?::(\w+))?}", piece)
        if param is not None and draw(st.integers(0, 3)):
            parts.append(encoded(draw, draw(CONVERTER_VALUES[param.group(1) or "str"])))
        elif param is None and draw(st.integers(0, 7)):
            parts.append(piece)
        else:
            parts.append(encoded(draw, draw(segments)))
    prefix = draw(st.sampled_from(["", "", "", "/", "//host", "/.", "/.."]))
    suffix = draw(
        st.sampled_from(["", "", "", "%0A", "%0a", "%0D", "%00", "/", "%2F", "x", "%20", "/.."])
    )
    return prefix + "/" + "/".join(parts) + suffix


@st.composite
def targets(draw: st.DrawFn) -> str:
    """A request target: a path, maybe a query string and a fragment."""
    target = draw(paths())
    if draw(st.booleans()):
        target += "?" + draw(st.text(PATH_CHARS, max_size=20))
    if draw(st.booleans()):
        target += "#" + draw(st.text(PATH_CHARS, max_size=10))
    return target


def check_params(name: str, params: dict[str, Any], expected: dict[str, Any]) -> None:
    assert params == expected, f"route {name}: got {params!r}, the path says {expected!r}"
    converters = next(route[4] for route in ROUTES if route[0] == name)
    for key, value in params.items():
        assert type(value) is converters[key], f"{name}.{key} is {type(value).__name__}"
        if converters[key] is str and key in ("name", "a"):
            assert value and "/" not in value


@fuzz(500)
@given(target=targets(), method=st.sampled_from(["GET", "HEAD", "POST", "DELETE", "OPTIONS"]))
@example(target="/items/42", method="GET")
@example(target="/items/42%0A", method="GET")  # `$` matches before a final newline
@example(target="/files/a%0Ab", method="GET")  # {rest:path} stops at a newline
@example(target="//host/items/3", method="GET")  # the test client reads "//host" as a netloc
@example(target="//[", method="GET")
def test_any_path_is_200_404_or_405_with_typed_parameters(target: str, method: str) -> None:
    PROBE.reset()
    path = expected_path(target)
    found = reference_match(path)
    allowed = [(name, params) for name, methods, params in found if method in methods]

    async def scenario(client: TestClient) -> None:
        response = await client.request(method, target)
        if allowed:
            name, params = allowed[0]
            assert response.status_code == 200, (response, path)
            assert len(PROBE.calls) == 1
            called, seen, seen_path = PROBE.calls[0]
            assert called == name, f"{path!r} went to {called}, not {name}"
            assert seen_path == path
            check_params(name, seen, params)
            assert response.content == (b"" if method == "HEAD" else name.encode())
        elif found:
            assert response.status_code == 405, (response, path)
            assert "allow" in response.headers
            assert PROBE.calls == []
        else:
            assert response.status_code == 404, (response, path, PROBE.calls)
            assert PROBE.calls == []

    run_with_client(ROUTING_APP, scenario)


@fuzz(400)
@given(target=targets())
@example(target="/keys/00000000-0000-0000-0000-000000000000")
@example(target="/items/42%0A")
@example(target="/files/a%0Ab")
@example(target="//host/items/3")
def test_any_websocket_path_is_accepted_with_typed_parameters_or_denied_404(target: str) -> None:
    PROBE.reset()
    path = expected_path(target)
    found = reference_match(path)

    async def scenario(client: TestClient) -> None:
        if not found:
            with pytest.raises(WebSocketDenied) as denied:
                async with client.websocket(target):
                    pass
            assert denied.value.status_code == 404
            assert PROBE.calls == []
            return
        async with client.websocket(target) as ws:
            assert (await closed_with(ws)).code == 1000
        name, _, params = found[0]
        assert len(PROBE.calls) == 1
        called, seen, seen_path = PROBE.calls[0]
        assert called == name, f"{path!r} went to {called}, not {name}"
        assert seen_path == path
        check_params(name, seen, params)

    run_with_client(ROUTING_APP, scenario)


# -- query strings, headers, cookies -------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
#: A header value as ASGI allows it: latin-1, no CR or LF (NUL included: the app must cope).
LATIN1_VALUE = st.text(st.characters(max_codepoint=0xFF, exclude_characters="\r\n"), max_size=40)
COOKIE_NAME = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.", min_size=1
)
COOKIE_VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=';"')
)

#: Headers the test client sets itself, drawn separately or left alone.
CLIENT_HEADERS = {
    "host",
    "origin",
    "cookie",
    "authorization",
    "content-length",
    "content-type",
    "connection",
    "upgrade",
    "sec-websocket-version",
    "sec-websocket-protocol",
}

INSPECT_APP = App()


def inspect_view(view: Any) -> dict[str, Any]:
    """Touch every accessor of the request data, as a handler would."""
    query = view.query_params
    headers = view.headers
    seen = {
        "path": view.path,
        "scheme": view.scheme,
        "query_string": view.query_string,
        "query": query.multi_items(),
        "query_lists": {key: query.getlist(key) for key in query},
        "query_first": {key: query[key] for key in query},
        "headers": headers.multi_items(),
        "header_lists": {key: headers.getlist(key) for key in headers},
        "header_upper": {key: headers.get(key.upper()) for key in headers},
        "raw": headers.raw,
        "cookies": view.cookies,
        "url": view.url,
        "client": view.client,
    }
    if hasattr(view, "authorization"):  # newer than this file's first version
        seen["authorization"] = view.authorization
    seen["shapes"] = (repr(query), repr(headers), len(query), len(headers))
    return seen


@INSPECT_APP.get("/inspect")
async def inspect_http(request: Request) -> Any:
    with PROBE.watching(HTTP_DOCUMENTED):
        PROBE.calls.append(inspect_view(request))
        return PlainTextResponse("ok")


@INSPECT_APP.websocket("/inspect")
async def inspect_ws(ws: WebSocket) -> None:
    with PROBE.watching(WS_DOCUMENTED):
        seen = inspect_view(ws)
        seen["subprotocols"] = ws.subprotocols
        PROBE.calls.append(seen)
        await ws.accept(subprotocol=ws.subprotocols[0] if ws.subprotocols else None)
        await ws.send_text("ok")


@st.composite
def cookie_headers(draw: st.DrawFn) -> tuple[str, dict[str, str] | None]:
    """A Cookie header, and the cookies it holds when it is well formed."""
    if draw(st.booleans()):
        return draw(LATIN1_VALUE), None
    pairs = draw(st.lists(st.tuples(COOKIE_NAME, COOKIE_VALUE), max_size=5))
    quoted = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    header = "; ".join(
        f'{n}="{v}"' if q else f"{n}={v}" for (n, v), q in zip(pairs, quoted, strict=True)
    )
    return header, dict(pairs)


@st.composite
def authorization_headers(draw: st.DrawFn) -> tuple[str, tuple[str, str] | None]:
    """An Authorization header, and the user and password when it is well-formed Basic."""
    kind = draw(st.sampled_from(["any", "basic", "basic-bytes", "bearer"]))
    if kind == "basic":
        user = draw(st.text(st.characters(exclude_categories=("Cs",), exclude_characters=":")))
        password = draw(st.text(st.characters(exclude_categories=("Cs",))))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return draw(st.sampled_from(["Basic", "basic", "BASIC"])) + " " + token, (user, password)
    if kind == "basic-bytes":
        return "Basic " + base64.b64encode(draw(st.binary(max_size=30))).decode(), None
    if kind == "bearer":
        return "Bearer " + draw(LATIN1_VALUE), None
    return draw(LATIN1_VALUE), None


@st.composite
def request_data(draw: st.DrawFn) -> dict[str, Any]:
    """Query (raw text or parameters), headers, cookies, authorization and host."""
    headers = draw(
        st.dictionaries(
            st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
                lambda name: name not in CLIENT_HEADERS
            ),
            LATIN1_VALUE,
            max_size=6,
        )
    )
    cookie, cookies = draw(cookie_headers())
    headers["cookie"] = cookie
    basic = None
    if draw(st.booleans()):
        headers["authorization"], basic = draw(authorization_headers())
    if draw(st.booleans()):
        headers["host"] = draw(LATIN1_VALUE)
    # Header names as a client may spell them: the client and the app must fold the case.
    spelled = {
        (name.upper() if draw(st.booleans()) else name): value for name, value in headers.items()
    }
    params = None
    query = ""
    if draw(st.booleans()):
        params = draw(
            st.dictionaries(
                st.text(PATH_CHARS, max_size=8),
                st.lists(st.text(PATH_CHARS, max_size=8), min_size=1, max_size=3),
                max_size=4,
            )
        )
    else:
        query = draw(st.text(PATH_CHARS, max_size=40)).replace("#", "")
    return {
        "headers": headers,
        "spelled": spelled,
        "cookies": cookies,
        "basic": basic,
        "params": params,
        "query": query,
    }


def check_inspected(seen: dict[str, Any], data: dict[str, Any], scheme: str) -> None:
    for name, value in data["headers"].items():
        assert seen["header_lists"][name] == [value]
        assert seen["header_upper"][name] == value
    if data["cookies"] is not None:
        assert seen["cookies"] == data["cookies"]
    assert isinstance(seen["cookies"], dict)
    if data["params"] is not None:
        expected = [(key, value) for key, values in data["params"].items() for value in values]
        assert seen["query"] == expected
    assert seen["client"] == ("127.0.0.1", 50000)
    assert seen["scheme"] == scheme
    url = seen["url"]
    assert url.startswith(f"{scheme}://")
    query = seen["query_string"].decode("latin-1")
    assert url.endswith(seen["path"] + (f"?{query}" if query else ""))
    if data["basic"] is not None and "authorization" in seen:
        authorization = seen["authorization"]
        assert (authorization.username, authorization.password) == data["basic"]


EMPTY_REQUEST: dict[str, Any] = {
    "headers": {"cookie": ""},
    "spelled": {"cookie": ""},
    "cookies": {},
    "basic": None,
    "params": None,
    "query": "",
}


@fuzz(300)
@given(data=request_data())
@example(
    data={
        "headers": {"cookie": '=; ;;a=="; b', "x-a": "\x00\xff"},
        "spelled": {"cookie": '=; ;;a=="; b', "X-A": "\x00\xff"},
        "cookies": None,
        "basic": None,
        "params": {"": ["", "&=?#"]},
        "query": "",
    }
)
def test_http_request_data_never_raises(data: dict[str, Any]) -> None:
    PROBE.reset()

    async def scenario(client: TestClient) -> None:
        target = "/inspect" + (f"?{data['query']}" if data["query"] else "")
        response = await client.get(target, headers=data["spelled"], params=data["params"])
        assert response.status_code == 200
        assert len(PROBE.calls) == 1
        check_inspected(PROBE.calls[0], data, "http")

    run_with_client(INSPECT_APP, scenario)


#: Origins and hosts that are hard to parse (brackets make urlsplit raise ValueError).
TRICKY_AUTHORITIES = ["[", "]", "a]", "[::1]", "[::1]:80", "h:99999", "h:-1", "h:", ":80", "@", ""]
TRICKY_ORIGINS = [
    "null",
    "http://[",
    "http://]",
    "http://[::1]",
    "http://testserver",
    "https://testserver",
    "http://testserver:80",
    "http://testserver.evil.example",
    "http://h:99999",
    "ws://testserver",
    "http://",
    "//testserver",
    "testserver",
    " HTTP://TESTSERVER/ ",
]
SIMPLE_AUTHORITY = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*(:[1-9][0-9]{0,3})?")


@fuzz(250)
@given(
    data=request_data(),
    subprotocols=st.lists(st.text(TOKEN_CHARS, min_size=1, max_size=10), unique=True, max_size=3),
    host=st.one_of(st.none(), st.sampled_from(TRICKY_AUTHORITIES), LATIN1_VALUE),
    origin=st.one_of(
        st.none(),
        st.just("same"),
        st.sampled_from(TRICKY_ORIGINS),
        st.sampled_from(TRICKY_AUTHORITIES).map(lambda authority: f"http://{authority}"),
        LATIN1_VALUE,
    ),
)
@example(data=EMPTY_REQUEST, subprotocols=[], host=None, origin="http://[")  # ValueError
@example(data=EMPTY_REQUEST, subprotocols=[], host="[", origin="http://testserver")
@example(data=EMPTY_REQUEST, subprotocols=[], host="localhost:8000", origin="same")
def test_websocket_handshake_data_never_raises(
    data: dict[str, Any], subprotocols: list[str], host: str | None, origin: str | None
) -> None:
    """Any handshake data: the handler sees it all without raising, or the origin check says
    403; an Origin of the very host the handshake went to, or none at all, is always let in."""
    PROBE.reset()
    headers = dict(data["spelled"])
    if host is not None:
        data = {**data, "headers": {**data["headers"], "host": host}}
        headers["Host"] = host
    effective_host = host if host is not None else data["headers"].get("host", "testserver")
    must_accept = origin is None
    if origin == "same":
        origin = f"http://{effective_host}"
        must_accept = SIMPLE_AUTHORITY.fullmatch(effective_host) is not None
    if origin is not None:
        headers["Origin"] = origin
    if data["params"] is not None:  # the WebSocket client takes a target only
        data = {**data, "params": None}

    async def scenario(client: TestClient) -> None:
        target = "/inspect" + (f"?{data['query']}" if data["query"] else "")
        try:
            async with client.websocket(target, subprotocols, headers) as ws:
                assert await ws.receive() == "ok"
                assert ws.subprotocol == (subprotocols[0] if subprotocols else None)
        except WebSocketDenied as denied:
            assert not must_accept, f"denied Origin {origin!r} for Host {effective_host!r}"
            assert denied.status_code == 403, denied
            assert PROBE.calls == []
            return
        assert len(PROBE.calls) == 1
        check_inspected(PROBE.calls[0], data, "ws")
        assert PROBE.calls[0]["subprotocols"] == subprotocols

    run_with_client(INSPECT_APP, scenario)


# -- HTTP bodies ---------------------------------------------------------------------------

SMALL_LIMIT = 64
BODY_APP = App()


@BODY_APP.post("/json")
async def body_json(request: Request) -> Any:
    with PROBE.watching(HTTP_DOCUMENTED):
        data = await request.json()
        return PlainTextResponse(json.dumps(data))  # ASCII: any parsed value is sendable


@BODY_APP.post("/small", max_body_size=SMALL_LIMIT)
async def body_small(request: Request) -> Any:
    with PROBE.watching(HTTP_DOCUMENTED):
        data = await request.json()
        return PlainTextResponse(json.dumps(data))


@BODY_APP.post("/text")
async def body_text(request: Request) -> Any:
    with PROBE.watching(HTTP_DOCUMENTED):
        text = await request.text()
        return PlainTextResponse(json.dumps(text))


@BODY_APP.post("/echo")
async def body_echo(request: Request) -> Any:
    with PROBE.watching(HTTP_DOCUMENTED):
        return {"value": await request.json()}  # the framework renders it as JSON


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)

#: Valid JSON nested far deeper than Python's recursion limit, and far shallower: nothing in
#: between, so that whether it parses does not depend on how deep the stack already is.
DEEP_JSON = st.one_of(
    st.integers(5_000, 60_000).map(lambda n: "[" * n + "]" * n),
    st.integers(5_000, 60_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)
SHALLOW_JSON = st.integers(1, 50).map(lambda n: "[" * n + "]" * n)
#: Valid JSON whose strings hold lone surrogates once parsed.
SURROGATE_JSON = st.sampled_from(['"\\ud800"', '["\\udfff", 1]', '{"k\\udc00": "x\\ud83d"}'])


@st.composite
def json_documents(draw: st.DrawFn) -> bytes:
    """Bytes that are JSON in some encoding, or almost, or not at all."""
    kind = draw(
        st.sampled_from(
            ["ascii", "utf-8", "utf-16", "utf-32", "binary", "text", "deep", "shallow", "surrogate"]
        )
    )
    if kind == "ascii":
        return json.dumps(draw(json_values)).encode()
    if kind in ("utf-8", "utf-16", "utf-32"):
        return json.dumps(draw(json_values), ensure_ascii=False).encode(kind)
    if kind == "binary":
        return draw(st.binary(max_size=100))
    if kind == "text":
        return draw(st.text(max_size=40)).encode()
    if kind == "deep":
        return draw(DEEP_JSON).encode()
    if kind == "shallow":
        return draw(SHALLOW_JSON).encode()
    return draw(SURROGATE_JSON).encode()


def parse_reference(body: str | bytes) -> tuple[bool, Any]:
    """(True, value) if ``body`` is JSON a server should accept, else (False, None)."""
    try:
        return True, json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False, None


def declares_over(content_length: str | None, limit: int) -> bool:
    """Whether a Content-Length header states a size over ``limit`` (only ASCII digits count)."""
    if content_length is None or not re.fullmatch(r"[0-9]+", content_length):
        return False
    digits = content_length.lstrip("0") or "0"
    return len(digits) > len(str(limit)) or int(digits) > limit


CODEC_NAMES = sorted(
    {
        *encodings.aliases.aliases,
        *encodings.aliases.aliases.values(),
        "undefined",
        "idna",
        "punycode",
        "unicode_escape",
        "raw_unicode_escape",
        "utf-8-sig",
        "utf-7",
        "rot13",
        "no-such-codec",
    }
)


@fuzz(500)
@given(
    route=st.sampled_from(["/json", "/small", "/echo"]),
    body=json_documents(),
    content_length=st.one_of(
        st.none(),
        st.integers(0, 10**7).map(str),
        st.sampled_from(["\u00b2", "\u00b9\u00b2", "1\u00b3", "9" * 5000, "-1", " 12", "0x10"]),
        LATIN1_VALUE,
    ),
)
@example(route="/json", body=b"[1]", content_length="\u00b2")  # isdigit() but not int()
@example(route="/json", body=b"[1]", content_length="9" * 5000)  # int() refuses 5000 digits
@example(route="/json", body=b"[" * 5000 + b"]" * 5000, content_length=None)  # RecursionError
@example(route="/echo", body=b'"\\ud800"', content_length=None)  # not encodable as UTF-8
def test_json_bodies_are_200_400_or_413(
    route: str, body: bytes, content_length: str | None
) -> None:
    PROBE.reset()
    limit = SMALL_LIMIT if route == "/small" else 1024 * 1024
    over = declares_over(content_length, limit) or len(body) > limit
    valid, value = parse_reference(body)
    headers = {} if content_length is None else {"content-length": content_length}

    async def scenario(client: TestClient) -> None:
        response = await client.post(route, content=body, headers=headers)
        if over:
            assert response.status_code == 413, response.content[:200]
        elif not valid:
            assert response.status_code == 400, response.content[:200]
        else:
            assert response.status_code == 200, response.content[:200]
            if route == "/echo":
                assert json.dumps(response.json()["value"]) == json.dumps(value)
            else:
                assert response.text == json.dumps(value)

    run_with_client(BODY_APP, scenario)


@fuzz(400)
@given(
    body=st.one_of(st.binary(max_size=60), st.text(max_size=30).map(str.encode), json_documents()),
    charset=st.one_of(st.none(), st.sampled_from(CODEC_NAMES)),
    content_type=st.one_of(st.none(), LATIN1_VALUE),
)
@example(body=b"abc", charset="undefined", content_type=None)  # UnicodeError, not a subclass
@example(body=b"xn--a", charset="idna", content_type=None)  # UnicodeError too
def test_text_bodies_are_200_or_400(
    body: bytes, charset: str | None, content_type: str | None
) -> None:
    PROBE.reset()
    headers = {}
    expected: str | None = None
    known = True
    if charset is not None:
        headers["content-type"] = f"text/plain; charset={charset}"
        try:
            expected = body.decode(charset)
        except Exception:  # any failure to decode, whatever its type, is the client's: 400
            expected = None
    elif content_type is not None:
        headers["content-type"] = content_type
        known = False  # whatever charset that names: 200 or 400
    else:
        try:
            expected = body.decode("utf-8")
        except UnicodeDecodeError:
            expected = None

    async def scenario(client: TestClient) -> None:
        response = await client.post("/text", content=body, headers=headers)
        if not known:
            assert response.status_code in (200, 400), response.content[:200]
        elif expected is None:
            assert response.status_code == 400, response.content[:200]
        else:
            assert response.status_code == 200, response.content[:200]
            # Compared as JSON text: parsing it again would join an escaped surrogate pair.
            assert response.text == json.dumps(expected)

    run_with_client(BODY_APP, scenario)


# -- WebSocket messages --------------------------------------------------------------------

MESSAGE_APP = App()


@MESSAGE_APP.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    with PROBE.watching(WS_DOCUMENTED):
        async with ws:
            async for message in ws:
                await ws.send(message)


@MESSAGE_APP.websocket("/json")
async def echo_json(ws: WebSocket) -> None:
    with PROBE.watching(WS_DOCUMENTED):
        async with ws:
            async for data in ws.iter_json():
                await ws.send_json(data)


@MESSAGE_APP.websocket("/json-receive")
async def receive_json(ws: WebSocket) -> None:
    with PROBE.watching(WS_DOCUMENTED):
        await ws.accept()
        while True:
            await ws.send_json(await ws.receive_json())


@MESSAGE_APP.websocket("/text")
async def echo_text(ws: WebSocket) -> None:
    with PROBE.watching(WS_DOCUMENTED):
        async with ws:
            async for text in ws.iter_text():
                await ws.send_text(text)


@MESSAGE_APP.websocket("/bytes")
async def echo_bytes(ws: WebSocket) -> None:
    with PROBE.watching(WS_DOCUMENTED):
        await ws.accept()
        while True:
            await ws.send_bytes(await ws.receive_bytes())


messages = st.one_of(st.text(max_size=200), st.binary(max_size=200))


@fuzz(200)
@given(batch=st.lists(messages, max_size=20))
@example(batch=["", b"", "\x00", b"\x00", "\U0001f600" * 50, bytes(range(256))])
def test_echo_round_trips_any_message_exactly(batch: list[str | bytes]) -> None:
    PROBE.reset()

    async def scenario(client: TestClient) -> None:
        async with client.websocket("/echo") as ws:
            for message in batch:
                await ws.send(message)
            for message in batch:
                got = await ws.receive()
                assert type(got) is type(message)
                assert got == message
            await ws.close(1000)

    run_with_client(MESSAGE_APP, scenario)


@st.composite
def json_messages(draw: st.DrawFn) -> str | bytes:
    document = draw(json_documents())
    if draw(st.booleans()):
        try:
            return document.decode("utf-8")  # as a text message
        except UnicodeDecodeError:
            pass
    return document


@fuzz(250)
@given(
    route=st.sampled_from(["/json", "/json-receive"]), batch=st.lists(json_messages(), max_size=6)
)
@example(route="/json", batch=["[" * 5000 + "]" * 5000])  # RecursionError is not a ValueError
@example(route="/json", batch=['{"a": 1}', "not json", "[1]"])
def test_json_messages_round_trip_or_close_1007(route: str, batch: list[str | bytes]) -> None:
    PROBE.reset()

    async def scenario(client: TestClient) -> None:
        async with client.websocket(route) as ws:
            for message in batch:
                await ws.send(message)
                valid, value = parse_reference(message)
                if not valid:
                    closed = await closed_with(ws)
                    assert closed.code == 1007, closed
                    return
                assert json.dumps(await ws.receive_json()) == json.dumps(value)
            await ws.close(1000)

    run_with_client(MESSAGE_APP, scenario)


@fuzz(200)
@given(
    route=st.sampled_from(["/text", "/bytes"]),
    batch=st.lists(st.one_of(st.text(max_size=30), st.binary(max_size=30)), max_size=8),
)
def test_the_wrong_message_type_closes_1003(route: str, batch: list[str | bytes]) -> None:
    PROBE.reset()
    wanted = str if route == "/text" else bytes

    async def scenario(client: TestClient) -> None:
        async with client.websocket(route) as ws:
            for message in batch:
                await ws.send(message)
                if not isinstance(message, wanted):
                    closed = await closed_with(ws)
                    assert closed.code == 1003, closed
                    return
                assert await ws.receive() == message
            await ws.close(1000)

    run_with_client(MESSAGE_APP, scenario)


# -- close codes and reasons ---------------------------------------------------------------


def sendable(code: object) -> bool:
    """RFC 6455: what an endpoint may put in a close frame."""
    return (
        isinstance(code, int)
        and not isinstance(code, bool)
        and (code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999)
    )


@MESSAGE_APP.websocket("/close")
async def closer(ws: WebSocket) -> None:
    with PROBE.watching(WS_DOCUMENTED):
        await ws.accept()
        how, code, reason = PROBE.args
        try:
            if how == "close":
                await ws.close(code, reason)
                return
            if how == "ensure_closed":
                await ws.ensure_closed(code, reason)
                return
            close = WebSocketClose(code, reason)
        except (ValueError, TypeError) as refused:
            PROBE.calls.append(refused)
            assert ws.connected, "a refused close must leave the socket open"
            await ws.send_text("refused")
            return
        raise close


close_codes = st.one_of(
    st.integers(1000, 1003),  # about half of the draws are codes an endpoint may send
    st.integers(1007, 1014),
    st.integers(3000, 4999),
    st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 2**63, -(2**63)]),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.sampled_from([1000.0, "1000", b"1000"]),
)
close_reasons = st.one_of(
    st.text(max_size=20),
    st.text(min_size=100, max_size=200),
    st.text(st.sampled_from("a\u00e9\u2603\U0001f600"), min_size=20, max_size=130),
)


@fuzz(400)
@given(
    how=st.sampled_from(["close", "ensure_closed", "raise"]),
    code=close_codes,
    reason=close_reasons,
)
@example(how="close", code=4000, reason="\u00e9" * 100)  # cut between the bytes of a character
@example(how="close", code=True, reason="")
def test_close_takes_sendable_codes_and_cuts_reasons(how: str, code: Any, reason: str) -> None:
    PROBE.reset((how, code, reason))

    async def scenario(client: TestClient) -> None:
        async with client.websocket("/close") as ws:
            if not sendable(code):
                assert await ws.receive() == "refused"
                assert (await closed_with(ws)).code == 1000
                [refused] = PROBE.calls
                kind = (
                    ValueError
                    if isinstance(code, int) and not isinstance(code, bool)
                    else TypeError
                )
                assert isinstance(refused, kind), (code, refused)
                return
            closed = await closed_with(ws)
            assert PROBE.calls == []
            assert closed.code == code
            sent = closed.reason.encode("utf-8")
            assert len(sent) <= MAX_CLOSE_REASON_BYTES
            assert reason.startswith(closed.reason)
            full = reason.encode("utf-8")
            if len(full) <= MAX_CLOSE_REASON_BYTES:
                assert closed.reason == reason
            else:  # cut as late as a character boundary allows
                assert len(sent) > MAX_CLOSE_REASON_BYTES - 4

    run_with_client(MESSAGE_APP, scenario)
