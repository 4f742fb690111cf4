"""Subscribe/unsubscribe churn on a real redis-server: no message is lost without a Gap."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import coredis
import trio
import trio.testing

from trioweb.broadcast import Broadcast, Gap, Subscription

TOPICS = [f"churn:{n}" for n in range(4)]
SUBSCRIBERS = 8
CYCLES = 150  # joins and leaves per subscriber
MAX_PUBLISHES = 3000  # per topic, in case the subscribers stall
MAX_STAY = 3  # messages a subscriber receives before it decides to leave (0 to MAX_STAY)
MAX_AWAY = 3  # scheduler turns before it rejoins (0 to MAX_AWAY)


@dataclass
class Ledger:
    """What the publisher has done on one topic: message ``n`` is the text ``str(n)``."""

    started: int = 0  # publishes begun: the next message is this number
    completed: int = 0  # publishes the broker has answered: all messages below this number


@dataclass
class Tally:
    """What the subscribers saw, for the assertions and the report (``pytest -s``)."""

    cycles: int = 0
    verified: int = 0  # cycles that received every message they were owed, with no Gap
    gapped: int = 0  # cycles told of a Gap (excused from the check)
    owed: int = 0  # messages the verified cycles were owed, all received
    fast_rejoins: int = 0  # joins one scheduler turn or less after this task's own leave
    failures: list[str] = field(default_factory=list)


async def receive_until(
    sub: Subscription, received: list[int], *, count: int = 0, reaching: int = -1
) -> Gap | None:
    """Receive into ``received`` until it holds ``count`` messages, the last at least
    ``reaching``; the Gap if one comes first."""
    while len(received) < count or (received[-1] if received else -1) < reaching:
        item = await sub.receive()
        if isinstance(item, Gap):
            return item
        assert isinstance(item, str)
        received.append(int(item))
    return None


async def test_churn_loses_no_message_without_a_gap(redis_server):
    """Subscribers join and leave topics fast, while another client publishes to all of them.

    What a subscription is owed, with at-most-once pub/sub: Redis hands a message to the
    connections subscribed to its topic at the moment it processes the PUBLISH, and to no
    other. So this process is owed a message only if the broker processed the PUBLISH after the
    SUBSCRIBE that made the topic live here and before the next UNSUBSCRIBE of it; and a local
    subscription is owed it if, besides, the subscription existed when the message came in. The
    test cannot see inside the broker. It uses a window it can see, which lies inside that one:

    - The window opens once ``hub.subscribe()`` has entered with no Gap first ("confirmed"):
      the hub has then read the broker's acknowledgement of a SUBSCRIBE of the topic with no
      UNSUBSCRIBE of it still on its way, so the broker processed that SUBSCRIBE already and
      will process no UNSUBSCRIBE while we stay. Publishes *begun* after that are owed. One
      begun earlier may have been processed before the SUBSCRIBE: it may arrive, but is not
      owed.
    - The window closes when the subscriber decides to leave: publishes the broker has
      *answered* by then are owed (Redis answers a PUBLISH once it has queued the message to
      every subscribed connection), and the subscriber stays until it has received them.

    Every subscription must receive all the messages it is owed, in order and once each, or be
    told of a Gap (anywhere in it: the subscriber then resynchronises and is owed nothing
    precise). Messages from a little before the window may arrive too (they were already on
    their way to this process): allowed, as long as the order holds. On a healthy broker there
    should be no Gap at all; a few are tolerated (a SUBSCRIBE the broker is too slow to confirm
    under load gives one), but most cycles must be checked in full, or the test proves nothing.
    """
    ledgers = {topic: Ledger() for topic in TOPICS}
    tally = Tally()
    subscribers_done = trio.Event()  # then the publisher stops

    async def publish(publisher: Broadcast) -> None:
        for n in range(MAX_PUBLISHES):
            for topic in TOPICS:
                ledgers[topic].started = n + 1
                assert await publisher.publish(topic, str(n)) is True
                ledgers[topic].completed = n + 1
            if subscribers_done.is_set():
                return

    async def churn(hub: Broadcast, rng: random.Random, cancel: trio.CancelScope) -> None:
        def fail(message: str) -> None:
            tally.failures.append(message)
            cancel.cancel()

        for _ in range(CYCLES):
            topic = rng.choice(TOPICS)
            ledger = ledgers[topic]
            tally.cycles += 1
            received: list[int] = []
            async with hub.subscribe(topic, max_buffer=10 * MAX_PUBLISHES) as sub:
                owed_from = owed_to = ledger.started
                with trio.move_on_after(5) as stalled:
                    gap = await receive_until(sub, received, count=rng.randint(0, MAX_STAY))
                    if gap is None:
                        owed_to = ledger.completed  # owed: owed_from <= n < owed_to
                        last_owed = owed_to - 1 if owed_to > owed_from else -1
                        gap = await receive_until(sub, received, reaching=last_owed)
            if stalled.cancelled_caught:
                return fail(
                    f"{topic}: nothing more for 5 s after {received[-5:]}, owed from "
                    f"{owed_from}, {ledger.completed} published, no Gap"
                )
            if received != sorted(set(received)):
                return fail(f"{topic}: out of order or twice: {received[:20]}")
            if gap is not None:
                tally.gapped += 1
            else:
                owed = list(range(owed_from, owed_to))
                if [n for n in received if owed_from <= n < owed_to] != owed:
                    missing = sorted(set(owed) - set(received))
                    return fail(
                        f"{topic}: owed {owed_from}..{owed_to - 1}, missed {missing[:10]} "
                        f"({len(missing)} in all), no Gap"
                    )
                tally.verified += 1
                tally.owed += len(owed)
            away = rng.randint(0, MAX_AWAY)
            tally.fast_rejoins += away <= 1
            for _ in range(away):
                await trio.lowlevel.checkpoint()

    hub, publisher = Broadcast(redis_server.url), Broadcast(redis_server.url)
    left_on_broker: dict[bytes, int] = {}
    with trio.fail_after(20):
        async with hub.lifespan(), publisher.lifespan():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, publisher)
                async with trio.open_nursery() as subscribers:
                    for seed in range(SUBSCRIBERS):
                        rng = random.Random(seed)
                        subscribers.start_soon(churn, hub, rng, nursery.cancel_scope)
                subscribers_done.set()
            if not tally.failures:
                # Every topic emptied: none is left subscribed on the broker. The hub sends
                # its UNSUBSCRIBEs as soon as it runs; the broker may need a moment more.
                async with coredis.Redis.from_url(redis_server.url) as client:
                    for _ in range(100):
                        await trio.testing.wait_all_tasks_blocked()
                        counts = await client.pubsub_numsub(*TOPICS)
                        left_on_broker = {topic: n for topic, n in counts.items() if n}
                        if not left_on_broker:
                            break

    print(tally)
    assert tally.failures == [], tally.failures
    assert hub.topics() == []
    assert left_on_broker == {}
    assert tally.cycles == SUBSCRIBERS * CYCLES
    assert tally.verified >= 0.9 * tally.cycles, tally
    assert tally.owed >= tally.cycles, tally  # the cycles were owed messages, not nothing
    assert tally.fast_rejoins >= tally.cycles // 4, tally
