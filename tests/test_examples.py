"""Each example app does what its docstring says."""

import pytest
import trio

from examples.echo import app as echo_app
from examples.ticker import app as ticker_app
from trioweb.testing import TestClient, WebSocketClosed, WebSocketDenied


async def test_echo_page_and_socket():
    async with TestClient(echo_app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert "new WebSocket" in page.text
        async with client.websocket("/ws") as ws:
            await ws.send("hello")
            assert await ws.receive() == "hello"
            await ws.send(b"\x01\x02")
            assert await ws.receive() == b"\x01\x02"


async def test_ticker_streams_and_takes_commands(autojump_clock):
    async with TestClient(ticker_app) as client, client.websocket("/ticker/ACME") as ws:
        first = await ws.receive_json()
        assert first == {"symbol": "ACME", "n": 1}
        await ws.send_json({"interval": 2})
        start = None
        # After the change, ticks arrive two (fake) seconds apart.
        for _ in range(3):
            await ws.receive_json()
            now = trio.current_time()
            if start is not None:
                assert now - start == pytest.approx(2, abs=0.1)
            start = now


async def test_ticker_producer_stops_when_the_client_leaves():
    import examples.ticker

    async with TestClient(ticker_app) as client:
        async with client.websocket("/ticker/ACME") as ws:
            await ws.receive_json()
            assert examples.ticker.running_producers == 1
        assert examples.ticker.running_producers == 0


async def test_ticker_rejects_a_bad_command():
    async with TestClient(ticker_app) as client, client.websocket("/ticker/ACME") as ws:
        await ws.send_json(["not", "a", "command"])
        with pytest.raises(WebSocketClosed) as closed:
            while True:
                await ws.receive()
    assert closed.value.code == 1008


async def test_dashboard_one_sampler_feeds_every_watcher(autojump_clock):
    from examples.dashboard import TOPIC, hub
    from examples.dashboard import app as dashboard_app

    async with TestClient(dashboard_app, receive_timeout=60) as client:
        async with client.websocket("/metrics") as first, client.websocket("/metrics") as second:
            a = [await first.receive_json() for _ in range(5)]
            b = [await second.receive_json() for _ in range(5)]
            assert a == b  # one sampler, one publish per sample, every watcher
            assert [s["tick"] for s in a] == list(range(a[0]["tick"], a[0]["tick"] + 5))
            assert a[-1]["connections"] == 2
            # A watcher that falls behind skips to the newest sample (see the broadcast tests
            # for the policy itself: the test client's sockets never fall behind).
            assert {s.policy for s in hub._fanout._topics[TOPIC]} == {"latest"}


def welcome(name, names, recovered=None):
    return {"type": "welcome", "name": name, "names": names, "recovered": recovered}


def presence(*names):
    return {"type": "presence", "names": list(names)}


def said(name, text):
    """A chat message as members receive it, without its offset."""
    return {"type": "message", "name": name, "text": text}


async def receive_said(ws):
    """The next message, which must be one said: (its offset, the rest)."""
    message = await ws.receive_json()
    offset = message.pop("offset")
    assert offset.isdigit(), message
    return offset, message


async def test_chat_page_and_rooms():
    from examples.chat import app as chat_app

    async with TestClient(chat_app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert 'import { connect } from "/trioweb.js"' in page.text
        assert (await client.get("/trioweb.js")).status_code == 200  # the page's client
        async with client.websocket("/ws/lobby?name=alice") as alice:
            assert await alice.receive_json() == welcome("alice", ["alice"])
            assert await alice.receive_json() == presence("alice")  # her own join
            async with client.websocket("/ws/lobby?name=bob") as bob:
                assert await bob.receive_json() == welcome("bob", ["alice", "bob"])
                assert await alice.receive_json() == presence("alice", "bob")
                assert await bob.receive_json() == presence("alice", "bob")
                async with client.websocket("/ws/elsewhere?name=carol") as carol:
                    assert await carol.receive_json() == welcome("carol", ["carol"])
                    assert await carol.receive_json() == presence("carol")
                    await bob.send_json({"text": "hi alice"})
                    first, message = await receive_said(alice)
                    assert message == said("bob", "hi alice")
                    assert await receive_said(bob) == (first, message)
                    await carol.send_json({"text": "anyone?"})
                    assert (await receive_said(carol))[1] == said("carol", "anyone?")
            assert await alice.receive_json() == presence("alice")  # bob left
            await alice.send_json({"text": "still here"})
            second, message = await receive_said(alice)
            assert message == said("alice", "still here")
            assert int(second) > int(first)


async def test_chat_resumes_from_an_offset():
    """``?since=`` the last offset seen: the welcome says ``recovered``, what was missed
    follows once, in order, then the live messages; an offset the room never gave: a reset."""
    from examples.chat import app as chat_app

    async with TestClient(chat_app) as client:
        async with client.websocket("/ws/lobby?name=alice") as alice:
            assert await alice.receive_json() == welcome("alice", ["alice"])
            assert await alice.receive_json() == presence("alice")
            offsets = []
            for text in ("one", "two", "three"):
                await alice.send_json({"text": text})
                offsets.append((await receive_said(alice))[0])
            # Bob saw "one", then lost his connection.
            async with client.websocket(f"/ws/lobby?name=bob&since={offsets[0]}") as bob:
                assert await bob.receive_json() == welcome("bob", ["alice", "bob"], True)
                assert await receive_said(bob) == (offsets[1], said("alice", "two"))
                assert await receive_said(bob) == (offsets[2], said("alice", "three"))
                assert await bob.receive_json() == presence("alice", "bob")
                await alice.send_json({"text": "four"})
                assert (await receive_said(bob))[1] == said("alice", "four")
            async with client.websocket("/ws/lobby?name=bob&since=12") as bob:
                assert await bob.receive_json() == welcome("bob", ["alice", "bob"], False)
                assert await bob.receive_json() == presence("alice", "bob")


async def test_chat_refuses_a_room_name_too_long():
    from examples.chat import app as chat_app

    async with TestClient(chat_app) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/ws/" + "r" * 101 + "?name=x"):
                pass
    assert denied.value.status_code == 400


@pytest.mark.parametrize(("sent", "code"), [("{not json", 1007), ('{"nope": 1}', 1003)])
async def test_chat_closes_on_bad_messages(sent, code):
    from examples.chat import app as chat_app

    async with TestClient(chat_app) as client, client.websocket("/ws/r?name=x") as ws:
        assert (await ws.receive_json())["type"] == "welcome"
        await ws.send(sent)
        with pytest.raises(WebSocketClosed) as closed:
            while True:
                await ws.receive()
    assert closed.value.code == code


@pytest.mark.parametrize(
    ("path", "options"),
    [
        ("/whoami", {"headers": {"authorization": "Bearer s3cret-alice"}}),
        ("/whoami?token=s3cret-alice", {}),
        ("/whoami", {"headers": {"cookie": "session=s3cret-alice"}}),
        ("/whoami", {"subprotocols": ["access_token", "s3cret-alice"]}),
    ],
)
async def test_auth_example_takes_a_token_from_anywhere(path, options):
    from examples.auth import app as auth_app

    async with TestClient(auth_app) as client, client.websocket(path, **options) as ws:
        assert await ws.receive_json() == {"user": "alice"}
        if "subprotocols" in options:
            assert ws.subprotocol == "access_token"


async def test_auth_example_denies_with_401_and_403():
    from examples.auth import app as auth_app

    async with TestClient(auth_app) as client:
        async with client.websocket(
            "/reports/2026?token=s3cret-bob", headers={"x-api-key": "k3y"}
        ) as ws:
            assert await ws.receive_json() == {"user": "bob", "year": 2026}
        with pytest.raises(WebSocketDenied) as no_key:
            async with client.websocket("/reports/2026?token=s3cret-bob"):
                pass
        assert (no_key.value.status_code, no_key.value.body) == (
            403,
            b"a valid X-API-Key header is required",
        )
        with pytest.raises(WebSocketDenied) as missing:
            async with client.websocket("/whoami?token=wrong"):
                pass
        with pytest.raises(WebSocketDenied) as forbidden:
            async with client.websocket("/admin/stats?token=s3cret-bob"):
                pass
        async with client.websocket("/admin/stats?token=s3cret-alice") as ws:
            assert (await ws.receive_json())["user"] == "alice"
    assert (missing.value.status_code, missing.value.body) == (401, b"missing or invalid token")
    assert missing.value.headers["www-authenticate"] == "Bearer"
    assert (forbidden.value.status_code, forbidden.value.body) == (
        403,
        b"bob is not an administrator",
    )
