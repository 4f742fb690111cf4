"""What a broadcast backend is, and what it delivers into: the two sides of one interface.

A backend carries published messages between processes (or, in-process, nowhere). It knows
nothing of subscriptions: whatever reaches this process it hands to a :class:`Sink`, which the
hub provides and which fans each message out to the local subscriptions of its topic. Backends
import this module only, never the hub; the hub imports the backends, never their insides.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["Backend", "Message", "Sink"]

#: What a backend carries: text or binary, as the publisher gave it (after JSON encoding).
Message = str | bytes


class Sink(Protocol):
    """Where a backend puts what reaches this process. Neither method waits or raises."""

    def deliver(self, topic: str, message: Message) -> None:
        """Hand ``message`` to every local subscription of ``topic``, in the order received.

        Called once per message per process, however many subscriptions there are.
        """

    def gap(self, topic: str | None, reason: str) -> None:
        """Tell the subscriptions of ``topic`` (of every topic, for ``None``) that messages may
        have been lost at this point, and why."""


class Backend(Protocol):
    """How a hub reaches other processes. The in-process backend reaches nobody."""

    async def run(self, sink: Sink, *, task_status: trio.TaskStatus[None]) -> None:
        """Connect, report started, then deliver incoming messages into ``sink`` until cancelled.

        Raises :class:`~trioweb.broadcast.BrokerUnavailable` before reporting started if the
        broker cannot be reached.
        """

    async def publish(self, topic: str, message: Message) -> bool:
        """Send ``message`` to every process subscribed to ``topic``; ``False`` if it could not
        (never raises for a broker outage)."""

    async def subscribe(self, topic: str) -> bool:
        """Start receiving ``topic``; ``False`` if the broker did not confirm it in time (the
        backend keeps trying)."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (done in the background)."""

    async def check(self) -> str | None:
        """``None`` if the broker answers (or there is none), else
        why not."""
