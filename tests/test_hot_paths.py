"""The fast paths of the per-message code keep the slow paths' rules.

Sends, the inbox and the hub were made cheap (see docs/performance.md); these tests pin down
what must not change: every send is a checkpoint, the send lock is fair and cancellable, the
inbox serves several consumers, and a hub wakes every subscriber however many there are.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trioweb import App, WebSocket
from trioweb._buffer import Buffer
from trioweb._connection import Connection
from trioweb._phases import Phase
from trioweb._types import SENT
from trioweb.broadcast import Broadcast
from trioweb.broadcast._fanout import WAKE_BATCH
from trioweb.testing import TestClient


def _connection(send: Any) -> Connection:
    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    connection = Connection({"type": "websocket"}, receive, send, inbox_size=4)
    connection.phase = Phase.CONNECTED
    connection.accepted = True
    return connection


async def test_a_send_is_a_checkpoint_when_the_server_does_not_yield() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:  # returns without yielding
        sent.append(message)

    connection = _connection(send)
    await assert_a_checkpoint_that_sends_nothing_once_cancelled(connection)
    assert [m["text"] for m in sent] == ["x"]


async def assert_a_checkpoint_that_sends_nothing_once_cancelled(connection: Any) -> None:
    """A send of "x" is a checkpoint; a send of "cancelled" in a cancelled scope raises
    Cancelled (and the caller checks that it was not sent)."""
    with trio.testing.assert_checkpoints():
        await connection.send({"type": "websocket.send", "text": "x"})
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await connection.send({"type": "websocket.send", "text": "cancelled"})


async def test_a_send_that_yields_in_the_server_yields_no_more() -> None:
    async def send(message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()

    connection = _connection(send)
    task = trio.lowlevel.current_task()
    before = task._schedule_points
    await connection.send({"type": "websocket.send", "text": "x"})
    assert task._schedule_points == before + 1  # the server's checkpoint, and no other


async def test_a_send_the_server_takes_without_a_yield_is_a_checkpoint_and_waits_its_turn() -> None:
    # The test client's send answers SENT: the app's send then takes no lock of its own, but
    # it is still a checkpoint, and still waits behind a sender that holds the lock.
    sent: list[str] = []

    def send(message: dict[str, Any]) -> Any:
        sent.append(message["text"])
        return SENT

    connection = _connection(send)
    await assert_a_checkpoint_that_sends_nothing_once_cancelled(connection)
    lock = connection._send_lock
    await lock.acquire()  # as the close and the accept hold it, across a yield
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.send, {"type": "websocket.send", "text": "b"})
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["x"]  # in line behind the holder
        lock.release()
    assert sent == ["x", "b"]
    assert not lock.held


async def test_concurrent_sends_take_turns_in_order_and_a_cancelled_one_leaves() -> None:
    gate = trio.Event()
    order: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        order.append(message["text"])
        if message["text"] == "first":
            await gate.wait()

    connection = _connection(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.send, {"type": "websocket.send", "text": "first"})
        await trio.testing.wait_all_tasks_blocked()
        cancelled = trio.CancelScope()

        async def second() -> None:
            with cancelled:
                await connection.send({"type": "websocket.send", "text": "second"})

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(connection.send, {"type": "websocket.send", "text": "third"})
        await trio.testing.wait_all_tasks_blocked()
        cancelled.cancel()  # waiting for the lock: it leaves the queue
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first"]
        gate.set()
    assert order == ["first", "third"]
    assert not connection._send_lock.held


async def test_the_inbox_serves_several_consumers_and_cancellation() -> None:
    buffer: Buffer[int] = Buffer(8)
    got: list[tuple[str, int | None]] = []

    async def consume(name: str) -> None:
        try:
            got.append((name, await buffer.get()))
        except StopAsyncIteration:
            got.append((name, None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, "a")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(consume, "b")
        nursery.start_soon(consume, "c")
        await trio.testing.wait_all_tasks_blocked()
        assert buffer.put(1) and buffer.put(2)  # two items wake two consumers
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(item for _, item in got) == [1, 2]
        buffer.close()  # and the third learns that the buffer is closed
    assert len(got) == 3 and got[-1][1] is None

    waiting: Buffer[int] = Buffer(2)
    with trio.move_on_after(0.01):
        await waiting.get()  # cancelled while parked: it leaves the waiters
    assert not waiting.waiting
    assert waiting.put(5) and waiting.put(6) and not waiting.put(7)
    assert await waiting.get() == 5


async def test_a_get_yields_once_per_item_unless_the_consumer_yielded_since_its_last() -> None:
    buffer: Buffer[int] = Buffer(300)
    for n in range(300):
        buffer.put(n)
    task = trio.lowlevel.current_task()
    # A loop of gets alone (nothing else yields): every get is a schedule point.
    for n in range(260):
        with trio.testing.assert_checkpoints():
            assert await buffer.get() == n
    # A consumer that yields between its gets (a handler whose send yields): the get finds
    # its item without a second trip through the scheduler...
    await trio.lowlevel.checkpoint()
    before = task._schedule_points
    assert await buffer.get() == 260
    assert task._schedule_points == before
    # ...and is still a cancellation point.
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await buffer.get()
    assert len(buffer) == 300 - 261


@pytest.mark.parametrize("iterate", [lambda ws: ws.__aiter__(), lambda ws: ws.iter_text()])
async def test_async_for_over_a_socket_survives_a_cancellation_and_ends_at_the_close(
    iterate: Any, autojump_clock: trio.abc.Clock
) -> None:
    app = App()
    seen: list[str] = []

    @app.websocket("/")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        messages = iterate(ws)
        with trio.move_on_after(1):  # cancelled while it waits for a second message
            async for message in messages:
                seen.append(message)
        await ws.send("left")
        # As with a trio channel, the same iterator goes on where the first loop stopped,
        # and ends when the socket closes.
        async for message in messages:
            await ws.send("after: " + message)
        seen.append("end")

    async with TestClient(app) as client, client.websocket("/") as ws:
        await ws.send("one")
        assert await ws.receive() == "left"
        await ws.send("two")
        assert await ws.receive() == "after: two"
    assert seen == ["one", "end"]


@pytest.mark.parametrize("subscribers", [WAKE_BATCH - 1, 5 * WAKE_BATCH + 3])
async def test_every_subscriber_gets_every_message_in_order(subscribers: int) -> None:
    hub = Broadcast(max_buffer=16)
    received: dict[int, list[str]] = {i: [] for i in range(subscribers)}

    async def subscriber(i: int, task_status: trio.TaskStatus[None]) -> None:
        async with hub.subscribe("t") as subscription:
            task_status.started()
            async for message in subscription:
                assert isinstance(message, str)
                received[i].append(message)

    async with hub.lifespan():
        async with trio.open_nursery() as nursery:
            for i in range(subscribers):
                await nursery.start(subscriber, i)
            await trio.testing.wait_all_tasks_blocked()  # all asleep in their buffers
            for n in range(3):
                await hub.publish("t", f"m{n}")
            await trio.testing.wait_all_tasks_blocked()
            assert all(messages == ["m0", "m1", "m2"] for messages in received.values())
            nursery.cancel_scope.cancel()


async def test_a_hub_shut_down_with_wakes_pending_leaves_nobody_asleep() -> None:
    hub = Broadcast(max_buffer=4)
    count = 4 * WAKE_BATCH
    got_it = 0

    async def subscriber(task_status: trio.TaskStatus[None]) -> None:
        nonlocal got_it
        async with hub.subscribe("t") as subscription:
            task_status.started()
            assert await subscription.receive() == "last"
            got_it += 1
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        async with hub.lifespan():
            for _ in range(count):
                await nursery.start(subscriber)
            await trio.testing.wait_all_tasks_blocked()
            hub._fanout.deliver("t", "last")  # no checkpoint before the hub stops: wakes pending
            assert len(hub._fanout._unwoken) == count - WAKE_BATCH
        assert not hub._fanout._unwoken  # the waker woke them all on its way out
        await trio.testing.wait_all_tasks_blocked()
        assert got_it == count
        nursery.cancel_scope.cancel()
