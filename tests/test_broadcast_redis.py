"""The Redis backend, under trio, against a real redis-server (see the fixture in conftest)."""

from __future__ import annotations

import logging

import pytest
import trio
from helpers import closed_with, serving
from trio_websocket import open_websocket_url

import trioweb.broadcast.redis
from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast, Gap
from trioweb.testing import TestClient


async def test_messages_cross_the_broker_with_their_types(redis_server):
    hub = Broadcast(redis_server.url)
    async with hub.lifespan(), hub.subscribe("t") as first, hub.subscribe("t") as second:
        assert await hub.publish("t", "text é") is True
        await hub.publish("t", b"\x00\xffbinary")
        await hub.publish("t", {"json": [1, 2]})
        for sub in (first, second):
            assert await sub.receive() == "text é"
            assert await sub.receive() == b"\x00\xffbinary"
            assert await sub.receive() == '{"json":[1,2]}'


async def test_order_is_kept_per_publisher(redis_server):
    hub = Broadcast(redis_server.url)
    async with hub.lifespan(), hub.subscribe("seq", max_buffer=1000) as sub:
        for n in range(300):
            await hub.publish("seq", str(n))
        assert [await sub.receive() for _ in range(300)] == [str(n) for n in range(300)]


async def test_topics_are_unsubscribed_on_the_broker_when_the_last_subscriber_leaves(
    redis_server,
):
    hub = Broadcast(redis_server.url)
    async with hub.lifespan():
        backend = hub._backend
        async with hub.subscribe("t"), hub.subscribe("t"):
            assert backend._wanted == {"t"}
        assert backend._wanted == set()
        # Subscribing again works (the broker may or may not have processed the unsubscribe).
        async with hub.subscribe("t") as sub:
            await hub.publish("t", "again")
            assert await sub.receive() == "again"


def chat_app(hub: Broadcast) -> App:
    app = App()
    app.use(hub)

    @app.websocket("/chat/{room}")
    async def chat(ws: WebSocket, nursery: trio.Nursery, room: str):
        async with ws, hub.subscribe(f"chat:{room}", max_buffer=1000) as sub:
            await ws.send("joined")  # the broker has confirmed the subscription
            nursery.start_soon(sub.forward_to, ws)
            async for text in ws:
                await hub.publish(f"chat:{room}", text)

    return app


async def test_two_servers_share_one_broker(redis_server):
    """A client on one server receives, in order, what a client on the other published."""
    async with (
        serving(chat_app(Broadcast(redis_server.url))) as one,
        serving(chat_app(Broadcast(redis_server.url))) as other,
    ):
        urls = [one.url(), other.url()]
        with trio.fail_after(20):
            async with (
                open_websocket_url(urls[0] + "/chat/lobby") as reader,
                open_websocket_url(urls[1] + "/chat/lobby") as writer,
            ):
                assert await reader.get_message() == "joined"
                assert await writer.get_message() == "joined"
                for n in range(100):
                    await writer.send_message(f"message {n}")
                got = [await reader.get_message() for _ in range(100)]
                assert got == [f"message {n}" for n in range(100)]
                # The writer's own server delivers through the broker too.
                assert [await writer.get_message() for _ in range(100)] == got


async def test_a_broker_restart_shows_a_gap_then_messages_flow_again(redis_server):
    hub = Broadcast(redis_server.url)
    async with hub.lifespan(), hub.subscribe("t") as sub:
        await hub.publish("t", "before")
        assert await sub.receive() == "before"

        redis_server.stop()
        # Publishing during the outage loses the message but never raises.
        assert await hub.publish("t", "lost") is False
        redis_server.start()

        with trio.fail_after(30):  # coredis reconnects with its own backoff
            gap = await sub.receive()
        assert isinstance(gap, Gap)
        assert "lost and restored" in gap.reason
        assert await hub.publish("t", "after") is True
        with trio.fail_after(10):
            assert await sub.receive() == "after"


async def test_subscribing_during_an_outage_starts_with_a_gap_and_recovers(redis_server):
    hub = Broadcast(redis_server.url)
    async with hub.lifespan():
        async with hub.subscribe("warm"):
            pass  # the pub/sub connection is up
        redis_server.stop()
        async with hub.subscribe("cold") as sub:
            first = await sub.receive()
            assert isinstance(first, Gap)
            redis_server.start()
            with trio.fail_after(30):  # the hub keeps retrying the subscribe by itself
                await hub._backend.confirmed_event("cold").wait()
            assert await hub.publish("cold", "hello") is True
            with trio.fail_after(10):
                assert await sub.receive() == "hello"


async def test_a_handler_survives_a_broker_outage(redis_server):
    hub = Broadcast(redis_server.url)
    app = App()
    app.use(hub)

    @app.websocket("/pub")
    async def pub(ws: WebSocket):
        async for text in ws:
            delivered = await hub.publish("t", text)
            await ws.send_json({"delivered": delivered})

    async with TestClient(app) as client, client.websocket("/pub") as ws:
        await ws.send("one")
        assert await ws.receive_json() == {"delivered": True}
        redis_server.stop()
        await ws.send("two")
        assert await ws.receive_json() == {"delivered": False}
        redis_server.start()


async def test_startup_with_the_broker_down_names_the_url():
    app = App()
    app.use(Broadcast("redis://:hunter2@127.0.0.1:1/0"))  # nothing listens on port 1
    with pytest.raises(RuntimeError) as failed:
        async with TestClient(app):
            pass
    message = str(failed.value)
    assert "cannot reach the broker at redis://:***@127.0.0.1:1/0" in message
    assert "hunter2" not in message
    assert "Traceback" not in message


async def test_a_topic_left_by_everyone_is_unsubscribed_on_the_broker(redis_server):
    hub = Broadcast(redis_server.url)
    async with hub.lifespan():
        backend = hub._backend
        async with hub.subscribe("gone"):
            pass
        async with hub.subscribe("kept") as sub:
            # "kept" confirmed after "gone" was released: the broker has processed both.
            await hub.publish("kept", "x")
            assert await sub.receive() == "x"
            assert "kept" in {c.decode() for c in backend._pubsub.channels}
            assert "gone" not in {c.decode() for c in backend._pubsub.channels}


async def test_a_room_rejoined_right_after_its_last_member_left_still_receives(redis_server):
    """The chat case: a room empties and someone rejoins at once.

    The leave sends UNSUBSCRIBE in the background; a rejoin made while it is still on its way
    must not be taken for live (the broker is about to drop the topic). Whatever the number of
    scheduler turns between the leave and the rejoin, the new member gets what is published
    once it has joined: on a healthy broker, the message itself (not even a Gap).
    """
    hub = Broadcast(redis_server.url)
    missed = None
    async with hub.lifespan():
        for turns in range(12):  # 0 to 11 scheduler turns between the leave and the rejoin
            async with hub.subscribe("room") as sub:
                await hub.publish("room", f"before {turns}")
                with trio.fail_after(5):
                    assert await sub.receive() == f"before {turns}"
            for _ in range(turns):
                await trio.lowlevel.checkpoint()
            got: object = "nothing, not even a Gap"
            async with hub.subscribe("room") as sub:
                assert await hub.publish("room", f"after {turns}") is True
                with trio.move_on_after(2):
                    got = await sub.receive()
            if got != f"after {turns}":
                missed = f"rejoined {turns} scheduler turns after the leave, got {got!r}"
                break
    assert missed is None, missed


async def test_a_bug_in_the_reader_is_raised_with_its_traceback_not_retried_as_an_outage(
    redis_server, caplog, monkeypatch
):
    """A bug of ours in the loop that drains the pub/sub connection is not a broker outage.

    It is logged with its traceback and raised (the hub stops), instead of being logged in one
    line as a failed connection and retried forever, each retry losing messages behind a Gap.
    """
    calls = 0

    def broken_unpack(payload: bytes) -> str:
        nonlocal calls
        calls += 1
        raise ZeroDivisionError("a bug in the reader")

    monkeypatch.setattr(trioweb.broadcast.redis, "unpack", broken_unpack)
    caplog.set_level(logging.DEBUG, logger="trioweb.broadcast")
    hub = Broadcast(redis_server.url)
    received: list[object] = []
    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as raised:
        async with hub.lifespan(), hub.subscribe("t") as sub:
            assert await hub.publish("t", "x") is True
            received.append(await sub.receive())  # the hub stops first: this is cancelled
    assert raised.group_contains(ZeroDivisionError, match="a bug in the reader", depth=None)
    assert received == []
    assert calls == 1
    assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(errors) == 1, caplog.text
    assert "a bug in the reader" in caplog.text
    assert "Traceback" in caplog.text


async def test_a_hub_stopped_by_a_bug_tells_its_subscribers_and_publishers(
    redis_server, monkeypatch
):
    """Once the hub has stopped on a bug, nobody waits for messages that will never come: each
    subscription raises the error (a forwarding socket closes with 1011), and so does publish."""

    def broken_unpack(payload: bytes) -> str:
        raise ZeroDivisionError("a bug in the reader")

    monkeypatch.setattr(trioweb.broadcast.redis, "unpack", broken_unpack)
    hub = Broadcast(redis_server.url)
    app = App()
    app.use(hub)
    subscribed = trio.Event()
    told: list[str] = []

    @app.websocket("/feed")
    async def feed(ws: WebSocket, nursery: trio.Nursery):
        async with ws, hub.subscribe("t") as sub:
            nursery.start_soon(sub.forward_to, ws)
            await ws.receive()

    async def subscriber():
        async with hub.subscribe("t") as sub:
            subscribed.set()
            try:
                await sub.receive()
            except RuntimeError as exc:
                told.append(str(exc))

    with trio.fail_after(10), pytest.raises(RuntimeError, match="app shutdown failed: ZeroDiv"):
        async with TestClient(app) as client, trio.open_nursery() as nursery:
            async with client.websocket("/feed") as ws:
                nursery.start_soon(subscriber)
                await subscribed.wait()
                assert await hub.publish("t", "x") is True
                closed = await closed_with(ws)
            assert closed.code == 1011
    assert told == ["the broadcast hub stopped: ZeroDivisionError: a bug in the reader"]
    with pytest.raises(RuntimeError, match="hub stopped: ZeroDivisionError: a bug in the reader"):
        await hub.publish("t", "y")
