"""The test client itself: timeouts, denials, cleanup, and the pytest plugin's fixture."""

import time

import pytest
import trio
import trio.testing
from helpers import closed_with

from trioweb import App, WebSocket
from trioweb.testing import TestClient, WebSocketClosed, WebSocketDenied


@pytest.fixture
def app():
    app = App()

    @app.websocket("/echo")
    async def echo(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    @app.websocket("/silent")
    async def silent(ws: WebSocket):
        await ws.accept()
        await trio.sleep_forever()

    @app.websocket("/stubborn")
    async def stubborn(ws: WebSocket):
        await ws.accept()
        with trio.CancelScope(shield=True):
            await trio.sleep(3600)

    @app.get("/")
    async def index(request):
        return "index"

    return app


async def test_the_plugin_provides_a_client_for_the_app_fixture(client):
    assert isinstance(client, TestClient)
    assert (await client.get("/")).text == "index"
    async with client.websocket("/echo") as ws:
        await ws.send("via fixture")
        assert await ws.receive() == "via fixture"


async def test_receive_fails_with_a_clear_message_instead_of_hanging(app, autojump_clock):
    async with TestClient(app, receive_timeout=3) as client, client.websocket("/silent") as ws:
        with pytest.raises(TimeoutError, match=r"no message from the app within 3 s"):
            await ws.receive()


async def test_leaving_waits_for_the_handler_but_not_forever(app, autojump_clock):
    async with TestClient(app, receive_timeout=3) as client:
        with pytest.raises(TimeoutError, match="did not finish within 3 s"):
            async with client.websocket("/stubborn"):
                pass


async def test_query_string_and_headers_reach_the_app():
    app = App()

    @app.websocket("/q")
    async def q(ws: WebSocket):
        await ws.send(f"{ws.query_params['x']} {ws.headers['x-h']}")

    async with TestClient(app) as client, client.websocket("/q?x=1", headers={"X-H": "2"}) as ws:
        assert await ws.receive() == "1 2"


async def test_denial_has_status_headers_and_body():
    app = App()

    @app.websocket("/no")
    async def no(ws: WebSocket):
        await ws.reject(429, b"slow down", headers={"retry-after": "5"})

    async with TestClient(app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/no"):
                pass
    assert denied.value.status_code == 429
    assert denied.value.headers["retry-after"] == "5"
    assert denied.value.body == b"slow down"


async def test_paths_must_be_absolute():
    async with TestClient(App()) as client:
        with pytest.raises(ValueError, match="start with '/'"):
            await client.get("relative")
        with pytest.raises(ValueError, match="start with '/'"):
            async with client.websocket("ws"):
                pass


async def test_the_test_client_rejects_asgi_protocol_errors_as_hypercorn_does():
    errors = []

    async def raw_app(scope, receive, send):
        # Not a trioweb app: a raw ASGI app that sends a frame after its own close.
        if scope["type"] != "websocket":
            return  # no lifespan support: the test client goes on without it
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        try:
            await send({"type": "websocket.send", "text": "after close"})
        except RuntimeError as exc:
            errors.append(str(exc))
        await receive()  # the client's answer to the close

    async with TestClient(raw_app) as client:
        async with client.websocket("/") as ws:
            with pytest.raises(WebSocketClosed):
                await ws.receive()
    assert errors == ["ASGI protocol error: the app sent 'websocket.send' in state 'closed'"]


# -- the two ways a message reaches a trioweb app ------------------------------------------
#
# The test client hands each message straight to a trioweb connection (the direct-delivery
# extension); a server hands it to ASGI receive(), where the connection's reader takes it. The
# same rules must hold both ways: the second is forced here by an ASGI middleware that hides
# the extension, as every real server does.


def through_receive(app):
    """``app`` as a server without the direct-delivery extension sees it."""

    async def asgi(scope, receive, send):
        extensions = {k: v for k, v in (scope.get("extensions") or {}).items() if "direct" not in k}
        await app({**scope, "extensions": extensions}, receive, send)

    return asgi


ways_in = pytest.mark.parametrize(
    "way_in", [lambda app: app, through_receive], ids=["direct", "receive"]
)


def limited_app() -> App:
    app = App(idle_timeout=30)

    @app.websocket("/echo", max_message_size=100)
    async def echo(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    @app.websocket("/deaf", inbox_size=2)
    async def deaf(ws: WebSocket):
        await ws.accept()
        await trio.sleep_forever()

    return app


@ways_in
async def test_both_ways_in_keep_order_limits_and_the_idle_timeout(way_in, autojump_clock):
    async with TestClient(way_in(limited_app()), receive_timeout=100) as client:
        async with client.websocket("/echo") as ws:
            for n in range(20):
                await ws.send(str(n) if n % 2 else str(n).encode())
            assert [await ws.receive() for _ in range(20)] == [
                str(n) if n % 2 else str(n).encode() for n in range(20)
            ]
            start = trio.current_time()
            for _ in range(3):  # a message every 20 s keeps it open past the 30 s limit
                await trio.sleep(20)
                await ws.send("ping")
                assert await ws.receive() == "ping"
            closed = await closed_with(ws)
            assert (closed.code, closed.reason) == (1000, "idle for more than 30 s")
            assert trio.current_time() - start == pytest.approx(90)
        async with client.websocket("/echo") as ws:
            await ws.send("é" * 51)
            closed = await closed_with(ws)
            assert (closed.code, closed.reason) == (
                1009,
                "message of 102 bytes over the limit of 100",
            )
        async with client.websocket("/deaf") as ws:
            for n in range(3):
                await ws.send(str(n))
            closed = await closed_with(ws)
            assert closed.code == 1008 and "more than 2 messages unread" in closed.reason


@ways_in
async def test_both_ways_in_after_the_handler_is_done(way_in):
    app = App()
    done = trio.Event()

    @app.websocket("/once")
    async def once(ws: WebSocket):
        await ws.send(await ws.receive())
        done.set()  # and returns: the socket closes with 1000

    async with TestClient(way_in(app)) as client, client.websocket("/once") as ws:
        await ws.send("a")
        assert await ws.receive() == "a"
        await done.wait()
        await ws.send("late")  # crosses the close: dropped, as a server drops it
        assert (await closed_with(ws)).code == 1000


@ways_in
async def test_both_ways_in_drop_what_crosses_the_apps_close(way_in):
    app = App()
    got = []
    closed = trio.Event()

    @app.websocket("/")
    async def once(ws: WebSocket):
        got.append(await ws.receive())
        await ws.close(4000, "enough")
        closed.set()

    async with TestClient(way_in(app)) as client, client.websocket("/") as ws:
        await ws.send("first")
        await closed.wait()
        await ws.send("crosses the close")  # the app has closed: dropped, as a server does
        closed_by_app = await closed_with(ws)  # (and the client answers the close)
        assert (closed_by_app.code, closed_by_app.reason) == (4000, "enough")
        with pytest.raises(RuntimeError, match="already closed"):
            await ws.send("after the client's own close")
    assert got == ["first"]


# -- time limits -----------------------------------------------------------------------------


async def test_a_wait_fails_exactly_at_its_limit_whenever_it_starts(app, autojump_clock):
    async with TestClient(app, receive_timeout=5) as client, client.websocket("/silent") as ws:
        for pause in (0, 3, 7.5):
            await trio.sleep(pause)
            start = trio.current_time()
            with pytest.raises(TimeoutError, match="within 5 s"):
                await ws.receive()
            assert trio.current_time() - start == pytest.approx(5)


async def test_a_shorter_limit_is_kept_while_a_longer_wait_is_pending(app, autojump_clock):
    async with TestClient(app, receive_timeout=60) as client:
        async with client.websocket("/silent") as patient:
            client.receive_timeout = 2
            async with client.websocket("/silent") as hasty, trio.open_nursery() as nursery:
                start = trio.current_time()

                async def wait_long():
                    with pytest.raises(TimeoutError, match="within 60 s"):
                        await patient.receive()
                    assert trio.current_time() - start == pytest.approx(60)

                nursery.start_soon(wait_long)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(TimeoutError, match="within 2 s"):
                    await hasty.receive()
                assert trio.current_time() - start == pytest.approx(2)


async def test_a_cancelled_wait_leaves_no_timeout_behind(app, autojump_clock):
    async with TestClient(app, receive_timeout=5) as client, client.websocket("/echo") as ws:
        with trio.move_on_after(1):
            await ws.receive()
        await trio.sleep(10)  # past the cancelled wait's deadline: nothing fires
        await ws.send("still fine")
        assert await ws.receive() == "still fine"


@pytest.mark.parametrize("seconds", [0, -1, float("nan")])
def test_receive_timeout_must_be_a_duration(app, seconds):
    with pytest.raises(ValueError, match="receive_timeout"):
        TestClient(app, receive_timeout=seconds)


async def test_send_text_and_send_bytes_check_their_argument(client):
    async with client.websocket("/echo") as ws:
        with pytest.raises(TypeError, match="str"):
            await ws.send_text(b"bytes")
        with pytest.raises(TypeError, match="send_text"):
            await ws.send_bytes("text")
        await ws.send_bytes(bytearray(b"ok"))
        assert await ws.receive() == b"ok"


async def test_a_message_arriving_at_the_very_deadline_is_either_read_or_timed_out(autojump_clock):
    app = App()

    @app.websocket("/late")
    async def late(ws: WebSocket):
        async for message in ws:
            await trio.sleep(5)  # exactly the client's limit: same instant as its deadline
            await ws.send(message)

    outcomes = set()
    async with TestClient(app, receive_timeout=5) as client, client.websocket("/late") as ws:
        for n in range(40):  # trio runs tasks woken together in a random order
            await ws.send(str(n))
            try:
                outcomes.add(await ws.receive() == str(n))
            except TimeoutError:
                outcomes.add("timeout")
                assert await ws.receive() == str(n)  # it came all the same
    assert outcomes <= {True, "timeout"}


def upper_case_text(inner):
    """An ASGI middleware that rewrites every text message it receives."""

    async def asgi(scope, receive, send):
        async def wrapped():
            message = await receive()
            if message["type"] == "websocket.receive" and message.get("text") is not None:
                message = {**message, "text": message["text"].upper()}
            return message

        await inner(scope, wrapped, send)

    return asgi


async def test_a_middleware_that_wraps_receive_sees_every_message(app):
    # The direct way in would go around it: it is taken only when the app has the client's own
    # receive(), as every message goes through a server's receive().
    async with TestClient(upper_case_text(app)) as client, client.websocket("/echo") as ws:
        await ws.send("hello")
        assert await ws.receive() == "HELLO"


async def test_the_fake_clock_stands_still_while_a_test_waits_outside_trio(app, autojump_clock):
    async with TestClient(app) as client, client.websocket("/echo") as ws:
        await ws.send("x")
        assert await ws.receive() == "x"
        start = trio.current_time()
        for _ in range(3):  # every task blocked, none on a deadline: the clock must not jump
            await trio.to_thread.run_sync(time.sleep, 0.02)
        assert trio.current_time() - start <= 5  # (at most to a deadline left from the echo)
        await ws.send("y")
        assert await ws.receive() == "y"


# -- a lifespan that crashes ----------------------------------------------------------------
#
# Before it answers the startup, an app that raises has no lifespan support, and the client goes
# on without it, as servers do. Once it has answered, a crash of its lifespan is a bug the test
# must see, with the original exception as the cause.


def leaves_of(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves_of(inner)]
    return [exc]


async def test_a_crash_of_the_lifespan_while_the_app_runs_reaches_the_test(app):
    # (A trioweb App no longer crashes here when one of its extensions does: that failure is
    # logged and reported at shutdown, test_lifespan.py. Any other ASGI app still can.)
    crash = ValueError("lifespan bug while serving")
    broken = trio.Event()

    async def crashing(scope, receive, send):
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await broken.wait()
        raise crash

    with pytest.raises(RuntimeError, match="lifespan bug while serving") as failure:
        async with TestClient(crashing):
            broken.set()  # the app has started: this crash is not a startup failure
            await trio.testing.wait_all_tasks_blocked()
    assert failure.value.__cause__ is not None
    assert crash in leaves_of(failure.value.__cause__)


async def test_a_middleware_whose_lifespan_raises_after_the_shutdown_is_not_silenced(app):
    crash = LookupError("middleware bug at shutdown")

    async def middleware(scope, receive, send):
        await app(scope, receive, send)
        if scope["type"] == "lifespan":
            raise crash  # after the app's lifespan.shutdown.complete

    with pytest.raises(RuntimeError, match="middleware bug at shutdown") as failure:
        async with TestClient(middleware) as client:
            assert (await client.get("/")).text == "index"
    assert failure.value.__cause__ is crash


async def test_an_app_that_raises_before_answering_the_startup_has_no_lifespan_support(app):
    async def without_lifespan(scope, receive, send):
        if scope["type"] == "lifespan":
            raise NotImplementedError("no lifespan here")
        await app(scope, receive, send)

    async with TestClient(without_lifespan) as client:
        assert (await client.get("/")).text == "index"
