"""The in-process broadcast hub: fan-out, overflow policies, unsubscribing, no leaks."""

from functools import partial

import pytest
import trio
import trio.testing
from helpers import closed_with

from trioweb import App, WebSocket, WebSocketDisconnect
from trioweb.broadcast import Broadcast, Gap, SubscriberTooSlow
from trioweb.testing import TestClient, WebSocketClosed


def living_tasks() -> int:
    """How many tasks the trio run has right now."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


def chat_app(hub: Broadcast) -> App:
    app = App()
    app.use(hub)

    @app.websocket("/chat/{room}")
    async def chat(ws: WebSocket, nursery: trio.Nursery, room: str):
        async with ws, hub.subscribe(f"chat:{room}") as sub:
            nursery.start_soon(sub.forward_to, ws)
            async for text in ws:
                await hub.publish(f"chat:{room}", text)

    return app


async def test_fan_out_to_many_subscribers_in_order():
    hub = Broadcast()
    async with hub.lifespan():
        async with trio.open_nursery() as nursery:
            received: list[list[str]] = []
            ready = trio.Event()
            subscribed = 0

            async def subscriber():
                nonlocal subscribed
                mine: list[str] = []
                received.append(mine)
                async with hub.subscribe("news") as sub:
                    subscribed += 1
                    if subscribed == 100:
                        ready.set()
                    async for message in sub:
                        mine.append(message)
                        if len(mine) == 20:
                            return

            for _ in range(100):
                nursery.start_soon(subscriber)
            await ready.wait()
            assert hub.subscribers("news") == 100
            for n in range(20):
                await hub.publish("news", f"item {n}")
    assert len(received) == 100
    assert all(messages == [f"item {n}" for n in range(20)] for messages in received)
    assert hub.subscribers("news") == 0
    assert hub.topics() == []


async def test_json_is_encoded_once_for_all_subscribers():
    hub = Broadcast()
    async with hub.lifespan(), hub.subscribe("t") as first, hub.subscribe("t") as second:
        await hub.publish("t", {"price": 1.5, "tags": ["é"]})
        await hub.publish("t", b"\x00raw")
        a, b = await first.receive(), await second.receive()
        assert a == '{"price":1.5,"tags":["é"]}'
        assert a is b  # one encoding, shared
        assert await first.receive() == b"\x00raw"
        assert await second.receive() == b"\x00raw"


async def test_topics_are_independent():
    hub = Broadcast()
    async with hub.lifespan(), hub.subscribe("a") as a, hub.subscribe("b") as b:
        await hub.publish("a", "for a")
        await hub.publish("b", "for b")
        assert await a.receive() == "for a"
        assert await b.receive() == "for b"
        await hub.publish("nobody", "lost")  # no subscriber: nothing happens


async def test_close_policy_ends_only_the_slow_subscriber():
    hub = Broadcast(max_buffer=3)
    async with (
        hub.lifespan(),
        hub.subscribe("t") as slow,
        hub.subscribe("t", max_buffer=100) as fast,
    ):
        for n in range(5):
            await hub.publish("t", str(n))
        assert [await fast.receive() for _ in range(5)] == ["0", "1", "2", "3", "4"]
        with pytest.raises(SubscriberTooSlow) as too_slow:
            await slow.receive()
        assert too_slow.value.code == 1013
        assert "more than 3 messages behind on t" in too_slow.value.reason
        assert slow.dropped == 4
        await hub.publish("t", "5")  # the slow one no longer buffers anything
        assert await fast.receive() == "5"
        assert len(slow._buffer) == 0


@pytest.mark.parametrize(
    ("policy", "expected", "dropped"),
    [
        ("drop_oldest", ["2", "3", "4"], 2),
        ("drop_newest", ["0", "1", "2"], 2),
        ("latest", ["4"], 4),
    ],
)
async def test_drop_policies_keep_what_they_promise_and_count_the_rest(policy, expected, dropped):
    hub = Broadcast()
    async with hub.lifespan(), hub.subscribe("t", max_buffer=3, on_overflow=policy) as sub:
        for n in range(5):
            await hub.publish("t", str(n))
        assert [await sub.receive() for _ in expected] == expected
        assert sub.dropped == dropped
        await hub.publish("t", "next")
        assert await sub.receive() == "next"


async def test_a_slow_socket_is_closed_with_1013_and_the_others_go_on():
    hub = Broadcast(max_buffer=5)
    app = App()
    app.use(hub)
    stalled = trio.Event()

    @app.websocket("/feed")
    async def feed(ws: WebSocket, nursery: trio.Nursery):
        # Room for the whole burst: a tight publish loop outruns any forwarder.
        async with ws, hub.subscribe("feed", max_buffer=50) as sub:
            nursery.start_soon(sub.forward_to, ws)
            await trio.sleep_forever()

    @app.websocket("/stalled")
    async def stalled_socket(ws: WebSocket):
        # Subscribes but never forwards: its buffer fills up.
        async with ws, hub.subscribe("feed") as sub:
            stalled.set()
            await trio.sleep_forever()
            await sub.forward_to(ws)

    async with TestClient(app) as client:
        async with client.websocket("/feed") as fast, client.websocket("/stalled"):
            await stalled.wait()
            for n in range(20):
                await hub.publish("feed", str(n))
            assert [await fast.receive() for _ in range(20)] == [str(n) for n in range(20)]

    # forward_to on an overflowed subscription closes its socket with 1013
    app2 = App()
    hub2 = app2.use(Broadcast(max_buffer=2))
    filled = trio.Event()
    go = trio.Event()

    @app2.websocket("/late")
    async def late(ws: WebSocket):
        async with ws, hub2.subscribe("feed") as sub:
            filled.set()
            await go.wait()
            await sub.forward_to(ws)

    async with TestClient(app2) as client, client.websocket("/late") as ws:
        await filled.wait()
        for n in range(3):
            await hub2.publish("feed", str(n))
        go.set()
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive()
    assert closed.value.code == 1013
    assert closed.value.reason.startswith("too slow")


async def test_chat_rooms_through_the_test_client():
    hub = Broadcast()
    app = chat_app(hub)
    async with TestClient(app) as client:
        async with (
            client.websocket("/chat/lobby") as alice,
            client.websocket("/chat/lobby") as bob,
            client.websocket("/chat/other") as carol,
        ):
            await alice.send("hello lobby")
            assert await alice.receive() == "hello lobby"
            assert await bob.receive() == "hello lobby"
            await carol.send("only here")
            assert await carol.receive() == "only here"
            await bob.send("hi alice")
            assert await alice.receive() == "hi alice"
            assert hub.subscribers("chat:lobby") == 2
        assert hub.subscribers("chat:lobby") == 0
        assert hub.topics() == []


async def test_a_disconnect_unsubscribes_and_leaves_no_task_behind():
    hub = Broadcast()
    app = chat_app(hub)
    before = living_tasks()
    async with TestClient(app) as client:
        during_idle = living_tasks()
        for _ in range(3):
            async with client.websocket("/chat/r") as ws:
                await ws.send("x")
                assert await ws.receive() == "x"
                assert hub.subscribers("chat:r") == 1
            await trio.testing.wait_all_tasks_blocked()
            assert hub.subscribers("chat:r") == 0
            assert living_tasks() == during_idle
    assert living_tasks() == before


async def test_cancelling_the_subscriber_unsubscribes():
    hub = Broadcast()
    async with hub.lifespan():
        with trio.CancelScope() as scope:

            async def cancel_when_subscribed():
                await trio.testing.wait_all_tasks_blocked()
                assert hub.subscribers("t") == 1
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_subscribed)
                async with hub.subscribe("t") as sub:
                    await sub.receive()
        assert hub.subscribers("t") == 0


async def test_a_subscription_ends_when_its_block_is_left():
    hub = Broadcast()
    async with hub.lifespan():
        async with hub.subscribe("t") as sub:
            pass
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()
        assert [m async for m in sub] == []


async def test_gaps_are_kept_and_not_repeated():
    hub = Broadcast()
    async with hub.lifespan(), hub.subscribe("t", max_buffer=1, on_overflow="drop_newest") as sub:
        await hub.publish("t", "a")
        hub._fanout.gap("t", "lost")
        hub._fanout.gap("t", "lost again")
        await hub.publish("t", "b")  # dropped: the buffer is full
        assert await sub.receive() == "a"
        assert await sub.receive() == Gap("lost")
        await hub.publish("t", "c")
        assert await sub.receive() == "c"


async def test_forward_to_hands_gaps_to_on_gap():
    hub = Broadcast()
    app = App()
    app.use(hub)

    @app.websocket("/g")
    async def g(ws: WebSocket, nursery: trio.Nursery):
        async def resync(gap: Gap):
            await ws.send_json({"resync": gap.reason})

        async with ws, hub.subscribe("t") as sub:
            nursery.start_soon(partial(sub.forward_to, ws, on_gap=resync))
            await ws.receive()

    async with TestClient(app) as client, client.websocket("/g") as ws:
        await trio.testing.wait_all_tasks_blocked()
        hub._fanout.gap("t", "broker restarted")
        await hub.publish("t", "after")
        assert await ws.receive_json() == {"resync": "broker restarted"}
        assert await ws.receive() == "after"


async def test_misuse_gets_clear_errors():
    with pytest.raises(ValueError, match="unknown overflow policy 'explode'"):
        Broadcast(on_overflow="explode")
    with pytest.raises(ValueError, match="max_buffer must be at least 1"):
        Broadcast(max_buffer=0)
    with pytest.raises(ValueError, match="unsupported broker URL 'http://x'"):
        Broadcast("http://x")
    with pytest.raises(ValueError, match="names no host"):
        Broadcast("redis://")
    with pytest.raises(TypeError, match="cannot be used"):
        App().use(object())  # type: ignore[type-var]
    hub = Broadcast()
    with pytest.raises(RuntimeError, match=r"app.use\(hub\)"):
        await hub.publish("t", "x")
    with pytest.raises(RuntimeError, match=r"app.use\(hub\)"):
        async with hub.subscribe("t"):
            pass
    async with hub.lifespan():
        with pytest.raises(ValueError, match="unknown overflow policy"):
            async with hub.subscribe("t", on_overflow="nope"):  # type: ignore[arg-type]
                pass


def test_broker_passwords_never_appear_in_messages():
    from trioweb.broadcast.redis import redact

    assert redact("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("redis://:secret@host/0") == "redis://:***@host/0"
    assert redact("redis://host/0") == "redis://host/0"


async def test_forward_to_accepts_and_sends_each_type_as_its_frame():
    hub = Broadcast()
    app = App()
    app.use(hub)
    subscribed = trio.Event()

    @app.websocket("/feed")
    async def feed(ws: WebSocket, nursery: trio.Nursery):
        async with hub.subscribe("feed") as sub:
            nursery.start_soon(sub.forward_to, ws)
            subscribed.set()  # and nothing else: the first delivery accepts, as ws.send does
            await trio.sleep_forever()

    async def publish_once_subscribed():
        await subscribed.wait()
        for message in ("text", b"bytes", {"json": [1, 2]}):
            await hub.publish("feed", message)

    async with TestClient(app, receive_timeout=2) as client, trio.open_nursery() as nursery:
        nursery.start_soon(publish_once_subscribed)
        async with client.websocket("/feed") as ws:
            assert await ws.receive() == "text"
            assert await ws.receive() == b"bytes"
            assert await ws.receive() == '{"json":[1,2]}'


async def test_forward_to_ends_when_the_app_closes_the_socket():
    hub = Broadcast()
    app = App()
    app.use(hub)
    forwarder_ended = trio.Event()
    outcome: list[str] = []

    @app.websocket("/feed")
    async def feed(ws: WebSocket, nursery: trio.Nursery):
        async with ws, hub.subscribe("feed") as sub:

            async def forward():
                try:
                    await sub.forward_to(ws)
                except WebSocketDisconnect:
                    outcome.append("disconnect")
                    raise
                finally:
                    forwarder_ended.set()

            nursery.start_soon(forward)
            await ws.receive()  # "stop"
            await ws.close(4000, "stop")
            await hub.publish("feed", "after the close")  # forward_to's send raises: it ends
            await forwarder_ended.wait()

    async with TestClient(app) as client, client.websocket("/feed") as ws:
        await ws.send("stop")
        closed = await closed_with(ws)
        assert (closed.code, closed.reason) == (4000, "stop")
    assert outcome == ["disconnect"]
