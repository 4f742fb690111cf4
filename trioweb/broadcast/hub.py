"""The broadcast hub: topics, bounded subscriptions, overflow policies, and gaps.

One message published to a topic reaches every subscription to it, in this process and, with
the Redis backend, in every other process. Each subscription has its own bounded buffer, filled
without ever waiting: a slow subscriber never slows the publisher or anyone else; what happens
to it when its buffer is full is its overflow policy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import trio

from .._buffer import Buffer
from .._json import json_text
from .._phases import Phase
from ..close_codes import CloseCode
from ..exceptions import WebSocketClose
from .errors import BrokerUnavailable

if TYPE_CHECKING:
    from ..app import App
    from ..websocket import WebSocket

__all__ = ["Broadcast", "Gap", "OverflowPolicy", "SubscriberTooSlow", "Subscription"]

logger = logging.getLogger("trioweb.broadcast")

OverflowPolicy = Literal["close", "drop_oldest", "drop_newest", "latest"]
POLICIES: tuple[OverflowPolicy, ...] = ("close", "drop_oldest", "drop_newest", "latest")

#: The close code a socket gets when its subscription overflows under the "close" policy.
TOO_SLOW_CODE = CloseCode.TRY_AGAIN_LATER

#: How many sleeping subscribers one delivery wakes at once; the hub's waker task wakes the
#: others this many per pass of trio's scheduler.
WAKE_BATCH = 8


@dataclass(frozen=True)
class Gap:
    """A marker in a subscription's stream: messages may have been lost here.

    The broker connection dropped and came back (Redis pub/sub is at-most-once), or the
    subscription could not be confirmed by the broker in time. Resynchronise your state.
    """

    #: Why there is a gap, in words.
    reason: str


class SubscriberTooSlow(WebSocketClose):
    """A subscription's buffer overflowed under the ``"close"`` policy.

    Uncaught in a connection, it closes the socket with 1013 (try again later): the client should
    reconnect and resynchronise.
    """

    def __init__(self, topic: str, limit: int) -> None:
        super().__init__(TOO_SLOW_CODE, f"too slow: more than {limit} messages behind on {topic}")
        #: The topic whose subscription overflowed.
        self.topic = topic


Message = str | bytes


class Subscription:
    """Messages published to one topic, as an async iterator of ``str``, ``bytes`` or :class:`Gap`.

    Made by :meth:`Broadcast.subscribe`; it ends when that context is left.
    """

    __slots__ = ("_buffer", "_overflowed", "dropped", "policy", "topic")

    def __init__(self, topic: str, max_buffer: int, policy: OverflowPolicy) -> None:
        #: The topic this subscription receives.
        self.topic = topic
        #: What happens when the buffer is full (see :class:`Broadcast`).
        self.policy = policy
        #: How many messages this subscription has dropped under its overflow policy.
        self.dropped = 0
        self._buffer: Buffer[Message | Gap] = Buffer(1 if policy == "latest" else max_buffer)
        self._overflowed = False

    def __repr__(self) -> str:
        return f"<Subscription {self.topic!r} {len(self._buffer)} waiting, {self.dropped} dropped>"

    # -- filled by the hub, never waiting ----------------------------------------------

    def _overflow(self, message: Message) -> None:
        """``message`` did not fit (or the subscription has ended): apply the policy."""
        buffer = self._buffer
        if buffer.closed:
            return
        if self.policy == "close":
            self._overflowed = True
            self.dropped += len(buffer) + 1
            buffer.close()
        elif self.policy == "drop_oldest":
            buffer.drop_oldest()
            buffer.put(message)
            self.dropped += 1
        elif self.policy == "drop_newest":
            self.dropped += 1
        else:  # latest: only the newest matters
            self.dropped += buffer.clear()
            buffer.put(message)

    def _put_gap(self, gap: Gap) -> None:
        # A gap is never dropped by the bound, and back-to-back gaps say nothing more than one.
        if not self._buffer.closed and not isinstance(self._buffer.peek_last(), Gap):
            self._buffer.force_put(gap)

    def _end(self) -> None:
        self._buffer.close()

    # -- read by the app ------------------------------------------------------------------

    async def receive(self) -> Message | Gap:
        """The next message or gap. Raises :class:`SubscriberTooSlow` after an overflow under the
        ``"close"`` policy, and ``trio.EndOfChannel`` once the subscription has ended."""
        try:
            return await self._buffer.get()
        except StopAsyncIteration:
            if self._overflowed:
                raise SubscriberTooSlow(self.topic, self._buffer.limit) from None
            raise trio.EndOfChannel(f"the subscription to {self.topic!r} has ended") from None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message | Gap:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def forward_to(
        self, ws: WebSocket, *, on_gap: Callable[[Gap], Awaitable[Any]] | None = None
    ) -> None:
        """Send every message of this subscription to ``ws``, text as text, bytes as binary.

        Gaps are passed to ``on_gap`` (for example to send the client a resync instruction) or,
        without it, skipped. Under the ``"close"`` policy an overflow raises
        :class:`SubscriberTooSlow`, which closes the socket with 1013 unless caught.
        """
        # The buffer and the connection directly, rather than ``async for item in self`` and
        # ``ws.send``: fewer coroutines on the stack of every subscriber, and each delivery's
        # send (which the server suspends two or three times) resumes one frame less each time.
        buffer, connection = self._buffer, ws._conn
        while True:
            try:
                item = await buffer.get()
            except StopAsyncIteration:
                if self._overflowed:
                    raise SubscriberTooSlow(self.topic, buffer.limit) from None
                return  # the subscription has ended
            if isinstance(item, Gap):
                if on_gap is not None:
                    await on_gap(item)
            elif connection.phase is not Phase.CONNECTED:
                await ws.send(item)  # before the accept, it accepts; after the close, it raises
            elif isinstance(item, str):
                await connection.send({"type": "websocket.send", "text": item})
            else:
                await connection.send({"type": "websocket.send", "bytes": item})


class Backend(Protocol):
    """How a hub reaches other processes. The in-process backend reaches nobody."""

    async def run(self, hub: Broadcast, *, task_status: trio.TaskStatus[None]) -> None:
        """Connect, report started, then deliver incoming messages until cancelled."""

    async def publish(self, topic: str, message: Message) -> bool:
        """Send ``message`` to every process subscribed to ``topic``; False if it could not."""

    async def subscribe(self, topic: str) -> bool:
        """Start receiving ``topic``; False if the broker did not confirm it in time."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (done in the background)."""


class MemoryBackend:
    """Fan-out inside one process: a publish is delivered at once, in order."""

    def __init__(self) -> None:
        self._hub: Broadcast | None = None

    async def run(self, hub: Broadcast, *, task_status: trio.TaskStatus[None]) -> None:
        """Nothing to connect to."""
        self._hub = hub
        task_status.started()
        await trio.sleep_forever()

    async def publish(self, topic: str, message: Message) -> bool:
        """Deliver ``message`` to this process's subscribers."""
        assert self._hub is not None
        await trio.lowlevel.checkpoint()
        self._hub._deliver(topic, message)
        return True

    async def subscribe(self, topic: str) -> bool:
        """Always confirmed."""
        await trio.lowlevel.checkpoint()
        return True

    def unsubscribe(self, topic: str) -> None:
        """Nothing to do."""


def encode(message: Any) -> Message:
    """``str`` and ``bytes`` as they are; anything else as compact JSON text, once."""
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    return json_text(message)


class Broadcast:
    """A publish/subscribe hub, in-process by default or across processes through Redis.

    ``url`` picks the backend: ``None`` for in-process, ``redis://host:port/db`` (also
    ``rediss://`` and ``unix://``) for Redis or Valkey. ``max_buffer`` and ``on_overflow`` are
    the defaults of every subscription:

    - ``"close"``: the subscriber is ended; :meth:`Subscription.forward_to` then closes its socket
      with 1013 "too slow", and everyone else goes on at full speed;
    - ``"drop_oldest"``: the oldest waiting message makes room;
    - ``"drop_newest"``: the new message is dropped;
    - ``"latest"``: only the newest message is kept (state feeds).

    Register it with ``app.use(hub)``: it connects at startup and disconnects at shutdown.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        max_buffer: int = 256,
        on_overflow: OverflowPolicy = "close",
    ) -> None:
        _check_policy(on_overflow)
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
        self.url = url
        self.max_buffer = max_buffer
        self.on_overflow: OverflowPolicy = on_overflow
        self._topics: dict[str, set[Subscription]] = {}
        self._running = False
        # Buffers holding a message whose sleeping subscriber is not woken yet, and the waker
        # task, while it sleeps for want of any (see _wake_subscribers).
        self._unwoken: list[Buffer[Message | Gap]] = []
        self._waker: trio.lowlevel.Task | None = None
        self._backend: Backend
        if url is None:
            self._backend = MemoryBackend()
        else:
            from .redis import RedisBackend

            self._backend = RedisBackend(url)

    def __repr__(self) -> str:
        return f"<Broadcast {self.url or 'in-process'}, {len(self._topics)} topics>"

    # -- life ---------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: App | None = None) -> AsyncIterator[Broadcast]:
        """Connect the hub for the duration of the block (``app.use`` does this for you)."""
        if self._running:
            raise RuntimeError("this Broadcast is already running")
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._backend.run, self)
                await nursery.start(self._wake_subscribers)
                self._running = True
                try:
                    yield self
                finally:
                    self._running = False
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # A broker unreachable at startup is reported as itself, not as a group.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], BrokerUnavailable):
                raise group.exceptions[0] from None
            raise

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError(
                "the Broadcast hub is not running: register it with app.use(hub) "
                "(or enter hub.lifespan())"
            )

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, topic: str, message: Any) -> bool:
        """Send ``message`` (``str``, ``bytes``, or anything JSON can encode) to ``topic``.

        Returns ``False`` if the broker is unreachable: the message is lost (pub/sub is
        at-most-once) and subscribers will see a :class:`Gap` once the broker is back. It never
        raises for a broker outage.
        """
        self._check_running()
        return await self._backend.publish(topic, encode(message))

    def _deliver(self, topic: str, message: Message) -> None:
        # Once per subscriber of every message: the buffer's put inline, the policy only when
        # it refuses. The first WAKE_BATCH sleeping subscribers are woken now, the others by
        # the waker task, WAKE_BATCH per pass of the scheduler (see _wake_subscribers).
        unwoken = self._unwoken
        awake = len(unwoken)  # others are already queued: wake none ahead of them
        for subscription in self._topics.get(topic, ()):
            buffer = subscription._buffer
            if not buffer.put_unwoken(message):
                subscription._overflow(message)
            elif buffer._waiters:
                if awake < WAKE_BATCH:
                    buffer.wake()
                    awake += 1
                else:
                    unwoken.append(buffer)
        if unwoken and self._waker is not None:
            trio.lowlevel.reschedule(self._waker)
            self._waker = None

    async def _wake_subscribers(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Wake the subscribers a delivery left asleep, WAKE_BATCH per pass of the scheduler.

        Woken all at once, a thousand subscribers would each take a step of their send, then
        the next step, a thousand tasks apart: every task's objects would then live through a
        whole pass, long enough for the garbage collector to move them to its oldest
        generation, and its full collections would cost more than the sends. A few at a time,
        each send's objects die young, as in a plain loop of sends, and a slow subscriber
        still holds up nobody: its message is already in its buffer.
        """
        unwoken = self._unwoken
        task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waker = None
            return trio.lowlevel.Abort.SUCCEEDED

        task_status.started()
        try:
            while True:
                if not unwoken:
                    self._waker = task
                    await trio.lowlevel.wait_task_rescheduled(abort)
                    continue
                batch = unwoken[:WAKE_BATCH]
                del unwoken[:WAKE_BATCH]
                for buffer in batch:
                    buffer.wake()
                await trio.lowlevel.checkpoint()
        finally:
            # Stopping (the hub's shutdown): whoever is left is woken now.
            self._waker = None
            for buffer in unwoken:
                buffer.wake()
            unwoken.clear()

    def _gap(self, topic: str, reason: str) -> None:
        gap = Gap(reason)
        for subscription in self._topics.get(topic, ()):
            subscription._put_gap(gap)

    # -- subscribing --------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        *,
        max_buffer: int | None = None,
        on_overflow: OverflowPolicy | None = None,
    ) -> AsyncIterator[Subscription]:
        """Receive what is published to ``topic`` for the duration of the block.

        Leaving the block, or the cancellation of the task inside it, unsubscribes. With Redis,
        the first subscription of a topic in this process waits (briefly) for the broker's
        confirmation; if it does not come, the subscription starts with a :class:`Gap`.
        """
        self._check_running()
        policy = self.on_overflow if on_overflow is None else _check_policy(on_overflow)
        limit = self.max_buffer if max_buffer is None else max_buffer
        if limit < 1:
            raise ValueError(f"max_buffer must be at least 1, not {limit}")
        subscription = Subscription(topic, limit, policy)
        subscribers = self._topics.setdefault(topic, set())
        subscribers.add(subscription)
        try:
            if not await self._backend.subscribe(topic):
                subscription._put_gap(Gap("the broker did not confirm the subscription yet"))
            yield subscription
        finally:
            subscribers.discard(subscription)
            subscription._end()
            if not subscribers and self._topics.get(topic) is subscribers:
                del self._topics[topic]
                self._backend.unsubscribe(topic)

    def subscribers(self, topic: str) -> int:
        """How many subscriptions to ``topic`` this process has."""
        return len(self._topics.get(topic, ()))

    def topics(self) -> list[str]:
        """The topics this process is subscribed to."""
        return list(self._topics)


def _check_policy(policy: str) -> OverflowPolicy:
    if policy not in POLICIES:
        raise ValueError(f"unknown overflow policy {policy!r} (use one of {', '.join(POLICIES)})")
    return policy
