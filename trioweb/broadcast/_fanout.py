"""Local fan-out: this process's subscriptions, and the table that delivers into them.

Each subscription has its own bounded buffer, filled without ever waiting: a slow subscriber
never slows the publisher or anyone else; what happens to it when its buffer is full is its
overflow policy. The table (:class:`Fanout`) is the :class:`~._backend.Sink` a backend delivers
into: one call per message, which reaches every subscription of the topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._buffer import Buffer
from ..close_codes import CloseCode
from ..exceptions import WebSocketClose
from ._backend import Message

if TYPE_CHECKING:
    from ..websocket import WebSocket

__all__ = [
    "POLICIES",
    "TOO_SLOW_CODE",
    "WAKE_BATCH",
    "Fanout",
    "Gap",
    "OverflowPolicy",
    "SubscriberTooSlow",
    "Subscription",
    "check_policy",
]

OverflowPolicy = Literal["close", "drop_oldest", "drop_newest", "latest"]
#: Every overflow policy, for checking and for messages.
POLICIES: tuple[OverflowPolicy, ...] = ("close", "drop_oldest", "drop_newest", "latest")

#: The close code a socket gets when its subscription overflows under the "close" policy.
TOO_SLOW_CODE = CloseCode.TRY_AGAIN_LATER

#: How many sleeping subscribers one delivery wakes at once; the waker task wakes the others
#: this many per pass of trio's scheduler.
WAKE_BATCH = 8


def check_policy(policy: str) -> OverflowPolicy:
    """Return ``policy`` if it is an overflow policy, else raise ``ValueError``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown overflow policy {policy!r} (use one of {', '.join(POLICIES)})")
    return policy


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


class Subscription:
    """Messages published to one topic, as an async iterator of ``str``, ``bytes`` or :class:`Gap`.

    Made by :meth:`Broadcast.subscribe`; it ends when that context is left.
    """

    __slots__ = ("_buffer", "_failure", "_overflowed", "dropped", "policy", "topic")

    def __init__(self, topic: str, max_buffer: int, policy: OverflowPolicy) -> None:
        #: The topic this subscription receives.
        self.topic = topic
        #: What happens when the buffer is full (see :class:`Broadcast`).
        self.policy = policy
        #: How many messages this subscription has dropped under its overflow policy.
        self.dropped = 0
        self._buffer: Buffer[Message | Gap] = Buffer(1 if policy == "latest" else max_buffer)
        self._overflowed = False
        # Why the hub stopped under this subscription, if it did (see Fanout.fail_all).
        self._failure: str | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.topic!r} {len(self._buffer)} waiting, {self.dropped} dropped>"

    # -- filled by the fan-out, never waiting -------------------------------------------

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

    def _fail(self, reason: str) -> None:
        if not self._buffer.closed:
            self._failure = reason
            self._buffer.close()

    def _ended(self) -> Exception | None:
        """What reading an ended subscription raises; ``None`` for a plain end."""
        if self._overflowed:
            return SubscriberTooSlow(self.topic, self._buffer.limit)
        if self._failure is not None:
            return RuntimeError(f"the broadcast hub stopped: {self._failure}")
        return None

    # -- read by the app ------------------------------------------------------------------

    async def receive(self) -> Message | Gap:
        """The next message or gap. Raises :class:`SubscriberTooSlow` after an overflow under the
        ``"close"`` policy, ``trio.EndOfChannel`` once the subscription has ended, and
        ``RuntimeError`` if the hub stopped on an error (a bug, logged with its traceback)."""
        try:
            return await self._buffer.get()
        except StopAsyncIteration:
            error = self._ended()
            if error is not None:
                raise error from None
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
        :class:`SubscriberTooSlow`, which closes the socket with 1013 unless caught. Like
        :meth:`receive`, it raises ``RuntimeError`` if the hub stopped on an error.
        """
        # The buffer and the socket's send_frame directly, rather than ``async for item in
        # self`` and ``ws.send``: fewer coroutines on the stack of every subscriber, and each
        # delivery's send (which the server suspends two or three times) resumes one frame less
        # each time. Before the accept, send_frame accepts; after the close, it raises.
        buffer, send_frame = self._buffer, ws.send_frame
        while True:
            try:
                item = await buffer.get()
            except StopAsyncIteration:
                error = self._ended()
                if error is not None:
                    raise error from None
                return  # the subscription has ended
            if isinstance(item, Gap):
                if on_gap is not None:
                    await on_gap(item)
            else:
                await send_frame(item)


class Fanout:
    """This process's subscriptions by topic: the :class:`~._backend.Sink` of the hub.

    A delivery puts the message in every subscription's buffer at once, inline, and wakes the
    first :data:`WAKE_BATCH` sleeping subscribers; the waker task (:meth:`wake_subscribers`)
    wakes the others, :data:`WAKE_BATCH` per pass of the scheduler.
    """

    __slots__ = ("_dropped_gone", "_slow_gone", "_topics", "_unwoken", "_waker", "gaps")

    def __init__(self) -> None:
        self._topics: dict[str, set[Subscription]] = {}
        # What the subscriptions that are gone dropped, and how many were too slow: the live
        # ones count their own (Subscription.dropped), read only when counts() is asked for.
        self._dropped_gone: dict[str, int] = {}
        self._slow_gone = 0
        #: Gaps announced (a reconnect of the broker counts once, whatever the topics).
        self.gaps = 0
        # Buffers holding a message whose sleeping subscriber is not woken yet, and the waker
        # task, while it sleeps for want of any (see wake_subscribers).
        self._unwoken: list[Buffer[Message | Gap]] = []
        self._waker: trio.lowlevel.Task | None = None

    def __len__(self) -> int:
        return len(self._topics)

    # -- the subscriptions ----------------------------------------------------------------

    def add(self, subscription: Subscription) -> None:
        """Deliver to ``subscription`` from now on."""
        self._topics.setdefault(subscription.topic, set()).add(subscription)

    def remove(self, subscription: Subscription) -> bool:
        """End ``subscription`` and deliver nothing more to it; True if it was the last
        subscription of its topic."""
        subscription._end()
        topic = subscription.topic
        subscribers = self._topics.get(topic)
        if subscribers is None or subscription not in subscribers:
            return False
        subscribers.discard(subscription)
        self._slow_gone += _tally(subscription, self._dropped_gone)
        if subscribers:
            return False
        del self._topics[topic]
        return True

    def fail_all(self, reason: str) -> None:
        """End every subscription with an error saying ``reason``: the hub has stopped."""
        for subscriptions in self._topics.values():
            for subscription in subscriptions:
                subscription._fail(reason)

    def gap_one(self, subscription: Subscription, reason: str) -> None:
        """Show ``subscription`` alone a :class:`Gap`."""
        self.gaps += 1
        subscription._put_gap(Gap(reason))

    def counts(self) -> tuple[dict[str, int], int]:
        """Messages dropped so far by policy, and subscribers ended for being too slow."""
        dropped = dict(self._dropped_gone)
        slow = self._slow_gone
        for subscriptions in self._topics.values():
            slow += sum(_tally(subscription, dropped) for subscription in subscriptions)
        return dropped, slow

    def subscribers(self, topic: str) -> int:
        """How many subscriptions ``topic`` has."""
        return len(self._topics.get(topic, ()))

    def topics(self) -> list[str]:
        """The topics that have subscriptions."""
        return list(self._topics)

    # -- the sink -------------------------------------------------------------------------

    def deliver(self, topic: str, message: Message) -> None:
        """Put ``message`` in every subscription of ``topic``, never waiting."""
        # Once per subscriber of every message: the buffer's put inline, the policy only when
        # it refuses. The first WAKE_BATCH sleeping subscribers are woken now, the others by
        # the waker task, WAKE_BATCH per pass of the scheduler (see wake_subscribers).
        unwoken = self._unwoken
        awake = len(unwoken)  # others are already queued: wake none ahead of them
        for subscription in self._topics.get(topic, ()):
            buffer = subscription._buffer
            asleep = buffer.put_unwoken(message)
            if asleep:
                if awake < WAKE_BATCH:
                    buffer.wake()
                    awake += 1
                else:
                    unwoken.append(buffer)
            elif asleep is None:
                subscription._overflow(message)
        if unwoken and self._waker is not None:
            trio.lowlevel.reschedule(self._waker)
            self._waker = None

    def gap(self, topic: str | None, reason: str) -> None:
        """Put a :class:`Gap` in every subscription of ``topic`` (of every topic, for ``None``)."""
        gap = Gap(reason)
        self.gaps += 1
        if topic is not None:
            for subscription in self._topics.get(topic, ()):
                subscription._put_gap(gap)
            return
        for subscriptions in self._topics.values():
            for subscription in subscriptions:
                subscription._put_gap(gap)

    # -- the waker task -------------------------------------------------------------------

    async def wake_subscribers(self, *, task_status: trio.TaskStatus[None]) -> None:
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


def _tally(subscription: Subscription, dropped: dict[str, int]) -> int:
    """Add what ``subscription`` has dropped to ``dropped``, under its policy; 1 if it was
    ended for being too slow, else 0."""
    if subscription.dropped:
        policy = subscription.policy
        dropped[policy] = dropped.get(policy, 0) + subscription.dropped
    return int(subscription._overflowed)
