"""The broadcast hub: publish, subscribe, and the backend that carries messages between processes.

One message published to a topic reaches every subscription to it, in this process and, with
the Redis backend, in every other process. The hub is the public face of three parts it wires
together: a backend (:mod:`._memory` in-process, :mod:`.redis` across processes) behind the
:class:`~._backend.Backend` protocol, the local fan-out (:mod:`._fanout`) the backend delivers
into, and the subscriptions the app reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .._failures import leaves
from .._json import json_text
from .._reporting import Report, bounded_check
from ._backend import Backend, Message
from ._fanout import Fanout, Gap, OverflowPolicy, SubscriberTooSlow, Subscription, check_policy
from ._memory import MemoryBackend
from .errors import BrokerUnavailable

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Broadcast", "Gap", "OverflowPolicy", "SubscriberTooSlow", "Subscription"]


def encode(message: Any) -> Message:
    """``str`` and ``bytes`` as they are; anything else as compact JSON text, once."""
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    return json_text(message)


def _new_backend(url: str | None) -> Backend:
    if url is None:
        return MemoryBackend()
    # Imported here: the Redis backend needs the optional extra (coredis).
    from .redis import RedisBackend

    return RedisBackend(url)


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
        check_policy(on_overflow)
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
        self.url = url
        self.max_buffer = max_buffer
        self.on_overflow: OverflowPolicy = on_overflow
        self._running = False
        # Why the last lifespan ended on an error, if it did.
        self._failure: str | None = None
        # What the backend delivers into: this process's subscriptions by topic.
        self._fanout = Fanout()
        self._backend = _new_backend(url)

    def __repr__(self) -> str:
        return f"<Broadcast {self.url or 'in-process'}, {len(self._fanout)} topics>"

    # -- life ---------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: App | None = None) -> AsyncIterator[Broadcast]:
        """Connect the hub for the duration of the block (``app.use`` does this for you)."""
        if self._running:
            raise RuntimeError("this Broadcast is already running")
        self._failure = None
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._backend.run, self._fanout)
                await nursery.start(self._fanout.wake_subscribers)
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
            # Stopped on an error (the backend's was logged with its traceback), not merely
            # cancelled: subscribers waiting for messages that will never come are told, and
            # so is whoever publishes.
            error = next((e for e in leaves(group) if not isinstance(e, trio.Cancelled)), None)
            if error is not None:
                self._failure = f"{type(error).__name__}: {error}"
                self._fanout.fail_all(self._failure)
            raise

    def _check_running(self) -> None:
        if not self._running:
            if self._failure is not None:
                raise RuntimeError(f"the Broadcast hub stopped: {self._failure}")
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
        policy = self.on_overflow if on_overflow is None else check_policy(on_overflow)
        limit = self.max_buffer if max_buffer is None else max_buffer
        if limit < 1:
            raise ValueError(f"max_buffer must be at least 1, not {limit}")
        subscription = Subscription(topic, limit, policy)
        fanout = self._fanout
        fanout.add(subscription)
        try:
            if not await self._backend.subscribe(topic):
                fanout.gap_one(subscription, "the broker did not confirm the subscription yet")
            yield subscription
        finally:
            if fanout.remove(subscription):
                self._backend.unsubscribe(topic)

    def subscribers(self, topic: str) -> int:
        """How many subscriptions to ``topic`` this process has."""
        return self._fanout.subscribers(topic)

    def topics(self) -> list[str]:
        """The topics this process is subscribed to."""
        return self._fanout.topics()

    # -- operations ---------------------------------------------------------------------

    def report(self) -> Report:
        """This process's counts for the metrics: messages dropped by policy, subscribers
        closed for being too slow, gaps announced (since the hub was made)."""
        dropped, slow = self._fanout.counts()
        return Report("broadcast", dropped=dropped, slow_closed=slow, gaps=self._fanout.gaps)

    async def check_broker(self) -> str | None:
        """``None`` if the hub is running and its broker answers a PING, else why not."""
        if not self._running:
            await trio.lowlevel.checkpoint()
            failure = f": {self._failure}" if self._failure else ""
            return f"the broadcast hub is not running{failure}"
        problem = await bounded_check(self._backend.check)
        return None if problem is None else f"broadcast broker unreachable: {problem}"
