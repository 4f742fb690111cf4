"""The Redis (or Valkey) backend of the broadcast hub, through coredis on trio.

One client and one pub/sub connection per process, owned by one long-lived task; topics are
subscribed on the broker when their first local subscriber arrives and unsubscribed when the
last one leaves. One reader drains the pub/sub connection without pause (coredis buffers
without bound between the socket and ``get_message()``) and decodes each message once for all
local subscribers.

What coredis does not do for us, and this module does:

- It reconnects and re-subscribes by itself after an outage but tells nobody: a subscribe
  acknowledgement we did not ask for is the sign of a gap, which subscribers are shown.
- A subscribe during an outage raises and coredis forgets the topic: the wanted topics are kept
  here and retried until the broker confirms them.
- Its ``channels`` says what it has seen acknowledged, not where the broker is heading: a topic
  stays in it while its UNSUBSCRIBE is on the way. Which topics to (un)subscribe, and when one
  is live, is decided here from our own account of the commands sent and the answers read.
- It accepts an unknown URL scheme silently: the URL is checked (``_redis_client.check_url``).

How a topic goes live: only the background task sends SUBSCRIBE and UNSUBSCRIBE, and counts
the answers it is owed per topic. Redis answers the commands of a connection in order, and a
message published after the broker processed a SUBSCRIBE comes behind its acknowledgement. So
when the reader sees a subscribe acknowledgement for a topic with no UNSUBSCRIBE of it still to
be answered, everything published to it from then on reaches us: the topic is live (confirmed).
An answer we did not ask for, or a command whose fate is unknown, is handled the cautious way:
a Gap for the subscribers rather than a claim that nothing was lost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import coredis
import trio

from ..logs import RateLimitedWarning
from ._backend import Message, Sink
from ._redis_client import (
    BROKER_ERRORS,
    check_url,
    describe,
    is_outage,
    ping,
    redact,
    run_client,
)
from .errors import BrokerUnavailable

__all__ = [
    "BROKER_ERRORS",
    "BrokerUnavailable",
    "RedisBackend",
    "check_url",
    "pack",
    "ping",
    "redact",
    "run_client",
    "unpack",
]

logger = logging.getLogger("trioweb.broadcast")

_TEXT, _BYTES = b"t", b"b"


def pack(message: Message) -> bytes:
    """Frame a message for the wire, keeping text and binary apart."""
    return _TEXT + message.encode("utf-8") if isinstance(message, str) else _BYTES + message


def unpack(payload: bytes) -> Message | None:
    """Undo :func:`pack`; ``None`` for a payload that is not ours."""
    kind, body = payload[:1], payload[1:]
    if kind == _TEXT:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if kind == _BYTES:
        return body
    return None


class RedisBackend:
    """Fan-out across processes through Redis pub/sub (at-most-once, ordered per publisher)."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        subscribe_timeout: float = 2.0,
        publish_timeout: float = 2.0,
        retry_interval: float = 1.0,
    ) -> None:
        self.url = check_url(url)
        self.connect_timeout = connect_timeout
        self.subscribe_timeout = subscribe_timeout
        self.publish_timeout = publish_timeout
        self.retry_interval = retry_interval
        #: "publish failed": the first, then one line per 10 s with the count (an outage
        #: fails every publish).
        self._publish_failed = RateLimitedWarning(logger, interval=10.0)
        self._sink: Sink | None = None
        self._client: coredis.Redis[bytes] | None = None
        self._pubsub: Any = None
        #: Topics with local subscribers.
        self._wanted: set[str] = set()
        #: Topics the broker sends us, or will once our commands are through, by our own
        #: account: the last command sent for each was a SUBSCRIBE (or coredis re-subscribed it).
        self._on_broker: set[str] = set()
        #: Topics whose last command failed: the broker may or may not be sending them.
        self._unsure: set[str] = set()
        #: Answers still owed to the SUBSCRIBE and UNSUBSCRIBE commands sent, per topic. Any
        #: other subscribe acknowledgement is coredis re-subscribing after a reconnect: a gap.
        self._subscribes_due: dict[str, int] = {}
        self._unsubscribes_due: dict[str, int] = {}
        #: The connection those answers are owed on (coredis replaces it without a word).
        self._connection: object = None
        #: Set while a topic is live: the broker has acknowledged a SUBSCRIBE of it and no
        #: UNSUBSCRIBE is on its way (see the module's docstring).
        self._confirmed: dict[str, trio.Event] = {}
        self._changed = trio.Event()

    # -- the owner task -----------------------------------------------------------------

    async def run(self, sink: Sink, *, task_status: trio.TaskStatus[None]) -> None:
        """Own the client: check the broker, report started, then keep the pub/sub alive and
        deliver what it brings into ``sink``."""
        self._sink = sink

        async def serve(client: coredis.Redis[bytes], started: Callable[[], None]) -> None:
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._keep_pubsub)
                    started()
                    await trio.sleep_forever()
            finally:
                self._client = None

        await run_client(
            self.url,
            what="the broker",
            connect_timeout=self.connect_timeout,
            serve=serve,
            task_status=task_status,
        )

    async def _keep_pubsub(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Hold one pub/sub connection; if it breaks beyond coredis's own retries, open another."""
        assert self._client is not None
        first = True
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=False) as pubsub:
                    self._pubsub = pubsub
                    self._forget_broker()
                    if not first:
                        self._sink_or_fail().gap(None, "the connection to the broker was replaced")
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._keep_subscribed, pubsub)
                        if first:
                            first = False
                            task_status.started()
                        await self._drain(pubsub)
            except Exception as exc:
                self._pubsub = None
                if not is_outage(exc):
                    # A bug (ours, or coredis's): reconnecting would hide it, and lose messages
                    # behind a Gap each time it strikes again. Stop the hub, loudly.
                    logger.error(
                        "the broadcast hub's reader of %s failed; the hub stops",
                        redact(self.url),
                        exc_info=exc,
                    )
                    raise
                logger.warning(
                    "broker pub/sub connection to %s failed (%s); reconnecting",
                    redact(self.url),
                    describe(exc),
                )
                if first:
                    first = False
                    task_status.started()
                await trio.sleep(self.retry_interval)

    async def _drain(self, pubsub: Any) -> None:
        """Read the pub/sub connection without pause and hand messages to the sink."""
        deliver = self._sink_or_fail().deliver
        while True:
            message = await pubsub.get_message()
            if message is None:
                continue
            kind = message["type"]
            channel = message["channel"]
            topic = channel.decode("utf-8", "replace") if isinstance(channel, bytes) else channel
            if kind == "message":
                decoded = unpack(message["data"])
                if decoded is None:
                    logger.warning("ignored a message on %r not published by trioweb", topic)
                    continue
                deliver(topic, decoded)
            elif kind == "subscribe":
                self._check_connection(pubsub)
                self._subscribe_acknowledged(topic)
            elif kind == "unsubscribe":
                self._check_connection(pubsub)
                self._unsubscribe_acknowledged(topic)

    def _subscribe_acknowledged(self, topic: str) -> None:
        """The broker sends ``topic`` from here on; live unless an UNSUBSCRIBE is still due."""
        if not _settle(self._subscribes_due, topic):
            # Not an answer to us: coredis re-subscribed after a reconnect (or the answer to a
            # SUBSCRIBE that timed out came late). What was published meanwhile is lost, and
            # the subscribers must be told. An UNSUBSCRIBE we still count on was most likely
            # lost with the old connection; if it was not, its answer shows it (a gap then).
            self._unsubscribes_due.pop(topic, None)
            self._unsure.discard(topic)
            self._on_broker.add(topic)
            self._changed.set()  # unsubscribe it if nobody wants it any more
            self._sink_or_fail().gap(topic, "the connection to the broker was lost and restored")
            logger.warning("broker connection to %s restored (%s)", redact(self.url), topic)
        if topic not in self._unsubscribes_due:
            self.confirmed_event(topic).set()

    def _unsubscribe_acknowledged(self, topic: str) -> None:
        """The broker stopped sending ``topic``; nothing more if a SUBSCRIBE is on its way."""
        _settle(self._unsubscribes_due, topic)
        if topic in self._subscribes_due:
            return  # re-subscribed right behind: it goes live with that answer
        self._on_broker.discard(topic)
        if topic in self._wanted:
            self._changed.set()
            if self._unconfirm(topic):
                # An UNSUBSCRIBE we had stopped counting on (its send failed, or coredis
                # re-subscribed in between) went through after all.
                self._sink_or_fail().gap(topic, "the broker dropped the subscription")
        else:
            self._unconfirm(topic)

    async def _keep_subscribed(self, pubsub: Any) -> None:
        """Make the broker's subscriptions follow the wanted topics, retrying through outages."""
        while True:
            # A fresh event before reading what is wanted: a change made while we work below
            # sets it, and is not lost.
            self._changed = trio.Event()
            extra = (self._on_broker | self._unsure) - self._wanted
            missing = self._wanted - self._on_broker
            failed = False
            if extra:
                failed |= not await self._send(pubsub, extra, subscribe=False)
            if missing:
                failed |= not await self._send(pubsub, missing, subscribe=True)
            with trio.move_on_after(self.retry_interval if failed else math.inf):
                await self._changed.wait()

    async def _send(self, pubsub: Any, topics: set[str], *, subscribe: bool) -> bool:
        """SUBSCRIBE or UNSUBSCRIBE ``topics`` in one command, and count the answers owed.

        Only the background task calls it, so the commands for a topic go out one at a time,
        in the order decided. Returns False if the command failed: those topics are unsure.
        """
        self._check_connection(pubsub)
        due = self._subscribes_due if subscribe else self._unsubscribes_due
        for topic in topics:
            self._unsure.discard(topic)
            if subscribe:
                self._on_broker.add(topic)
            else:
                self._on_broker.discard(topic)
                self._unconfirm(topic)  # no longer live from this moment on
            due[topic] = due.get(topic, 0) + 1
        command = pubsub.subscribe if subscribe else pubsub.unsubscribe
        try:
            with trio.fail_after(self.subscribe_timeout):
                await command(*topics)
        except BROKER_ERRORS as exc:
            logger.debug("broker command for %s failed: %s", sorted(topics), describe(exc))
            # The command may never have reached the broker: count on no answer to it (a late
            # one is then taken for coredis re-subscribing: a spurious gap at worst) and send
            # again, whichever way is wanted by then.
            for topic in topics:
                self._on_broker.discard(topic)
                self._unsure.add(topic)
                due.pop(topic, None)
            return False
        return True

    def _check_connection(self, pubsub: Any) -> None:
        """Forget the answers owed on a connection coredis has replaced: they will not come.

        Checked before each command and each acknowledgement read, so that coredis
        re-subscribing on a new connection is never taken for the answer to a command sent on
        the old one (answers from the old one still on their way are then taken for coredis's:
        a spurious gap at worst).
        """
        try:
            connection = pubsub.connection
        except BROKER_ERRORS:
            return
        if connection is not self._connection:
            self._subscribes_due.clear()
            self._unsubscribes_due.clear()
            self._connection = connection

    def _unconfirm(self, topic: str) -> bool:
        """``topic`` is no longer live; True if it was."""
        event = self._confirmed.get(topic)
        if event is not None and event.is_set():
            del self._confirmed[topic]  # the next confirmation sets a new event
            return True
        return False

    def _forget_broker(self) -> None:
        """A new pub/sub connection: it has no subscriptions and owes no answers."""
        self._on_broker.clear()
        self._unsure.clear()
        self._subscribes_due.clear()
        self._unsubscribes_due.clear()
        self._connection = None
        for topic in list(self._confirmed):
            self._unconfirm(topic)

    def _sink_or_fail(self) -> Sink:
        assert self._sink is not None, "the backend is not running"
        return self._sink

    # -- called from handlers -----------------------------------------------------------

    async def publish(self, topic: str, message: Message) -> bool:
        """PUBLISH through the shared client; ``False`` (and a warning) if the broker is down."""
        client = self._client
        if client is None:
            await trio.lowlevel.checkpoint()
            return False
        try:
            with trio.fail_after(self.publish_timeout):
                await client.publish(topic, pack(message))
        except BROKER_ERRORS as exc:
            self._publish_failed.warning(
                "publish to %r failed, message lost: %s", topic, describe(exc)
            )
            return False
        if self._publish_failed.suppressed:
            self._publish_failed.flush()
        return True

    async def subscribe(self, topic: str) -> bool:
        """Want ``topic``; wait (up to ``subscribe_timeout``) until it is live.

        Live means that everything published to it from then on reaches this process (unless
        the connection breaks, which shows as a gap). False if the broker did not confirm in
        time; the background task keeps trying.
        """
        self._wanted.add(topic)
        confirmed = self.confirmed_event(topic)
        if confirmed.is_set():
            await trio.lowlevel.checkpoint()
            return True
        self._changed.set()  # the background task sends the SUBSCRIBE
        with trio.move_on_after(self.subscribe_timeout):
            await confirmed.wait()
        return confirmed.is_set()

    def unsubscribe(self, topic: str) -> None:
        """Stop wanting ``topic``; the background task unsubscribes on the broker."""
        self._wanted.discard(topic)
        event = self._confirmed.get(topic)
        if event is not None and not event.is_set():
            del self._confirmed[topic]  # a live topic's event goes when its UNSUBSCRIBE is sent
        self._changed.set()

    async def check(self) -> str | None:
        """``None`` if the broker answers a PING, else why not."""
        return await ping(self._client)

    def confirmed_event(self, topic: str) -> trio.Event:
        """An event set once the broker has acknowledged a subscription to ``topic``."""
        event = self._confirmed.get(topic)
        if event is None:
            event = self._confirmed[topic] = trio.Event()
        return event


def _settle(due: dict[str, int], topic: str) -> bool:
    """Count one answer owed for ``topic`` as received; False if none was owed."""
    count = due.get(topic, 0)
    if count <= 0:
        return False
    if count == 1:
        del due[topic]
    else:
        due[topic] = count - 1
    return True
