"""The Redis (or Valkey) backend of the broadcast hub, through coredis on trio.

One client and one pub/sub connection per process, owned by one long-lived task; topics are
subscribed on the broker when their first local subscriber arrives and unsubscribed when the
last one leaves. One reader drains the pub/sub connection without pause (coredis buffers
without bound between the socket and ``get_message()``) and decodes each message once for all
local subscribers.

What coredis does not do for us, and this module does:

- It reconnects and re-subscribes by itself after an outage but tells nobody: a second
  subscribe acknowledgement for a topic is the sign of a gap, which subscribers are shown.
- A subscribe during an outage raises and coredis forgets the topic: the wanted topics are kept
  here and retried until the broker confirms them.
- It accepts an unknown URL scheme silently: the URL is checked here.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import coredis
import trio
from coredis.exceptions import RedisError

from .._failures import leaves
from .errors import BrokerUnavailable

if TYPE_CHECKING:
    from .hub import Broadcast, Message

__all__ = ["BrokerUnavailable", "RedisBackend"]

logger = logging.getLogger("trioweb.broadcast")

SCHEMES = ("redis", "rediss", "unix")
#: Errors that mean "the broker is not reachable right now", never a bug of ours.
BROKER_ERRORS = (RedisError, OSError, TimeoutError, trio.TooSlowError)

_TEXT, _BYTES = b"t", b"b"


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def check_url(url: str) -> str:
    """Return ``url`` if it names a Redis server coredis can reach, else raise ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"unsupported broker URL {redact(url)!r}: use redis://host:port/db, "
            "rediss:// (TLS) or unix:///path/to/socket"
        )
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"broker URL {redact(url)!r} names no socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"broker URL {redact(url)!r} names no host")
    return url


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


def _subscribed_topics(pubsub: Any) -> set[str]:
    """The topics coredis holds subscribed (and re-subscribes after a reconnect)."""
    return {c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c in pubsub.channels}


def _describe(exc: BaseException) -> str:
    leaf = next((e for e in leaves(exc) if not isinstance(e, trio.Cancelled)), exc)
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__


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
        self._hub: Broadcast | None = None
        self._client: coredis.Redis[bytes] | None = None
        self._pubsub: Any = None
        #: Topics with local subscribers.
        self._wanted: set[str] = set()
        #: Subscribe acknowledgements we asked for and have not seen yet, per topic. Any other
        #: acknowledgement is coredis re-subscribing after a reconnect: a gap.
        self._own_acks: dict[str, int] = {}
        #: Subscribes on their way to the broker, so that concurrent callers send one.
        self._in_flight: dict[str, trio.Event] = {}
        #: Set when the broker confirms a topic (first subscribe, or coredis re-subscribing).
        self._confirmed: dict[str, trio.Event] = {}
        self._changed = trio.Event()

    # -- the owner task -----------------------------------------------------------------

    async def run(self, hub: Broadcast, *, task_status: trio.TaskStatus[None]) -> None:
        """Own the client: check the broker, report started, then keep the pub/sub alive."""
        self._hub = hub
        client: coredis.Redis[bytes] = coredis.Redis.from_url(self.url, decode_responses=False)
        started = False
        try:
            # coredis wraps errors raised inside these blocks in ExceptionGroups: the
            # user-facing error is raised outside, below.
            async with client:
                with trio.fail_after(self.connect_timeout):
                    await client.ping()
                self._client = client
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._keep_pubsub)
                    started = True
                    task_status.started()
                    await trio.sleep_forever()
        except BaseException as exc:
            self._client = None
            if started:
                # Being cancelled at shutdown, coredis's teardown can raise (ClosedResourceError
                # from its push-message reader): only the cancellation matters then.
                if isinstance(exc, BaseExceptionGroup):
                    cancelled, noise = exc.split(trio.Cancelled)
                    if cancelled is not None:
                        if noise is not None:
                            logger.debug("broker client teardown: %s", _describe(noise))
                        raise cancelled from None
                raise
            if not any(isinstance(e, BROKER_ERRORS) for e in leaves(exc)):
                raise
            failure = _describe(exc)
        raise BrokerUnavailable(f"cannot reach the broker at {redact(self.url)}: {failure}")

    async def _keep_pubsub(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Hold one pub/sub connection; if it breaks beyond coredis's own retries, open another."""
        assert self._client is not None
        first = True
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=False) as pubsub:
                    self._pubsub = pubsub
                    self._own_acks.clear()
                    if not first:
                        self._gap_all("the connection to the broker was replaced")
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._keep_subscribed, pubsub)
                        if first:
                            first = False
                            task_status.started()
                        await self._drain(pubsub)
            except Exception as exc:
                self._pubsub = None
                logger.warning(
                    "broker pub/sub connection to %s failed (%s); reconnecting",
                    redact(self.url),
                    _describe(exc),
                )
                if first:
                    first = False
                    task_status.started()
                await trio.sleep(self.retry_interval)

    async def _drain(self, pubsub: Any) -> None:
        """Read the pub/sub connection without pause and hand messages to the hub."""
        assert self._hub is not None
        hub = self._hub
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
                hub._deliver(topic, decoded)
            elif kind == "subscribe":
                self.confirmed_event(topic).set()
                if self._own_acks.get(topic, 0) > 0:
                    self._own_acks[topic] -= 1
                else:
                    # coredis re-subscribed after a reconnect: what was published meanwhile
                    # is lost, and the subscribers must be told.
                    hub._gap(topic, "the connection to the broker was lost and restored")
                    logger.warning("broker connection to %s restored (%s)", redact(self.url), topic)

    async def _keep_subscribed(self, pubsub: Any) -> None:
        """Make the broker's subscriptions follow the wanted topics, retrying through outages."""
        while True:
            # A fresh event before reading what is wanted: a change made while we work below
            # sets it, and is not lost.
            self._changed = trio.Event()
            subscribed = _subscribed_topics(pubsub)
            missing = self._wanted - subscribed
            extra = subscribed - self._wanted
            failed = False
            for topic in missing:
                failed |= not await self._subscribe_now(pubsub, topic)
            if extra:
                failed |= not await self._try(pubsub.unsubscribe, *extra)
            with trio.move_on_after(self.retry_interval if failed else math.inf):
                await self._changed.wait()

    async def _subscribe_now(self, pubsub: Any, topic: str) -> bool:
        """SUBSCRIBE once, however many tasks ask at the same time; True once confirmed."""
        if (in_flight := self._in_flight.get(topic)) is not None:
            await in_flight.wait()
            return topic in _subscribed_topics(pubsub)
        done = self._in_flight[topic] = trio.Event()
        self._own_acks[topic] = self._own_acks.get(topic, 0) + 1
        try:
            confirmed = await self._try(pubsub.subscribe, topic)
            if not confirmed:
                # The command may never have reached the broker: expect no answer to it, at
                # the price of a spurious gap if one comes late.
                self._own_acks[topic] = 0
            return confirmed
        finally:
            del self._in_flight[topic]
            done.set()

    async def _try(self, command: Any, *topics: str) -> bool:
        try:
            with trio.fail_after(self.subscribe_timeout):
                await command(*topics)
        except BROKER_ERRORS as exc:
            logger.debug("broker command for %s failed: %s", topics, _describe(exc))
            return False
        return True

    def _gap_all(self, reason: str) -> None:
        assert self._hub is not None
        for topic in self._wanted:
            self._hub._gap(topic, reason)

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
            logger.warning("publish to %r failed, message lost: %s", topic, _describe(exc))
            return False
        return True

    async def subscribe(self, topic: str) -> bool:
        """Want ``topic``; wait (up to ``subscribe_timeout``) until the broker confirms it."""
        self._wanted.add(topic)
        pubsub = self._pubsub
        if pubsub is not None and topic in _subscribed_topics(pubsub):
            await trio.lowlevel.checkpoint()
            return True
        if pubsub is None or not await self._subscribe_now(pubsub, topic):
            self._changed.set()  # the background task keeps trying
            return False
        return True

    def unsubscribe(self, topic: str) -> None:
        """Stop wanting ``topic``; the background task unsubscribes on the broker."""
        self._wanted.discard(topic)
        self._confirmed.pop(topic, None)
        self._changed.set()

    def confirmed_event(self, topic: str) -> trio.Event:
        """An event set once the broker has acknowledged a subscription to ``topic``."""
        event = self._confirmed.get(topic)
        if event is None:
            event = self._confirmed[topic] = trio.Event()
        return event
