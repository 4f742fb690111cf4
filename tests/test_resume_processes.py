"""Resume across real processes: two ``trioweb run examples.auction:app`` servers on one real
redis-server, real WebSocket clients (trio-websocket), and a client that leaves one server and
comes back on the other with ``?since=`` (issue 14).

What is proved:

1. a client that reconnects on the other server with the last offset it saw gets exactly what
   it missed, in order, then the live messages, none twice, none lost: over 20 reconnects in a
   row, alternately a -> b and b -> a, while four clients (two in each process) publish chats
   and bids without pause, before, while and after each reconnect, and the owner task sells
   a lot each second. The client's whole sequence of bids, chats and sales (every connection's,
   one after the other) equals the one seen by two watchers that stayed connected all along,
   one in each process (offsets and content);
2. the bound: with ``AUCTION_HISTORY=5``, a client that missed exactly 5 messages gets them
   (``recovered: true``); one that missed 6 gets ``recovered: false``, no replay, and then
   only live messages, newer than all before;
3. an offset the room never gave (``12345``, ``0``, one above the newest, a million above,
   a 20-digit one) is ``recovered: false``, no replay; the newest offset itself is
   ``recovered: true``, nothing replayed, nothing twice;
4. without ``since``: no ``recovered`` in the welcome, no replay.

The time from a reconnect's handshake to the last replayed message of a 100-message gap is
measured and printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import itertools
import statistics
from bisect import bisect_right
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from helpers import HOST
from test_rooms_processes import Client, Server, ms, two_servers
from trio_websocket import open_websocket_url

#: Several server processes or the benchmark harness: `nox -s long` (or `pytest -m long`).
pytestmark = pytest.mark.long

AUCTION = "examples.auction:app"
ROOM = "lot"
#: Reconnects in the scenario of test 1.
RECONNECTS = 20
#: Every test, servers included, ends within this many seconds.
TEST_TIMEOUT = 30
#: Each reconnect of test 1 (away, back, the live message) ends within this.
RECONNECT_TIMEOUT = 5
#: Every wait for one step in the quiet tests.
STEP_TIMEOUT = 5
#: How many times the 100-message gap's replay is measured.
MEASUREMENTS = 5
GAP = 100


def auction_settings(
    redis_url: str, *, history: int = 1000, lot_seconds: float = 60
) -> dict[str, str]:
    return {
        "TRIOWEB_BROADCAST_URL": redis_url,
        "AUCTION_HISTORY": str(history),
        "AUCTION_LOT_SECONDS": str(lot_seconds),
    }


def is_stored(message: dict[str, Any]) -> bool:
    """A bid, chat or sale: kept in the room's history, with an offset."""
    return "offset" in message


def offset(message: dict[str, Any]) -> int:
    return int(message["offset"])


def stored(client: Client, start: int = 0) -> list[dict[str, Any]]:
    """The stored messages ``client`` received (from ``start``), in the order it got them."""
    return [r.message for r in client.received[start:] if is_stored(r.message)]


def check_stored(messages: list[dict[str, Any]]) -> None:
    """The wire protocol's promises about offsets: a string of digits, first key, increasing."""
    for message in messages:
        assert next(iter(message)) == "offset", message
        assert isinstance(message["offset"], str) and message["offset"].isdigit(), message
        assert message["type"] in ("bid", "chat", "sold"), message
    offsets = [offset(m) for m in messages]
    assert offsets == sorted(set(offsets)), "offsets not strictly increasing"


def between(messages: list[dict[str, Any]], after: int, upto: float) -> list[dict[str, Any]]:
    """The messages (sorted by offset) with ``after < offset <= upto``."""
    offsets = [offset(m) for m in messages]
    return messages[bisect_right(offsets, after) : bisect_right(offsets, upto)]


def span(values: Iterable[int]) -> str:
    ordered = sorted(values)
    return f"{ordered[0]}-{ordered[-1]}"


def ws_url(server: Server, user: str, since: str | None = None) -> str:
    query = {"user": user} if since is None else {"user": user, "since": since}
    return f"ws://{HOST}:{server.port}/ws/{ROOM}?{urlencode(query)}"


@asynccontextmanager
async def connected(server: Server, user: str, since: str | None = None) -> AsyncIterator[Client]:
    """A client of the auction's room through ``server`` (resuming from ``since``), once it has
    its welcome, reading every message as it comes; disconnected (1000) at the end."""
    async with open_websocket_url(ws_url(server, user, since)) as ws, trio.open_nursery() as reader:
        client = Client(user, server, ws)
        reader.start_soon(client.read)
        welcome = await client.wait_for(lambda m: True)
        assert welcome.message["type"] == "welcome", welcome
        yield client
        reader.cancel_scope.cancel()


async def wait_stored(client: Client, count: int, after: int) -> None:
    """Until ``client`` has received ``count`` stored messages with an offset above ``after``."""
    left = count

    def counted(message: dict[str, Any]) -> bool:
        nonlocal left
        if is_stored(message) and offset(message) > after:
            left -= 1
        return left <= 0

    if count > 0:
        await client.wait_for(counted)


@dataclass
class Publishing:
    """Clients that publish without pause, one message at a time each: send, wait for it to
    come back (published), send the next one."""

    #: When each message was sent, by ("chat", text) or ("bid", amount).
    sent: dict[tuple[str, Any], float] = field(default_factory=dict)
    #: Each publication: when it was sent, and when it came back to its sender (trio's clock).
    publications: list[tuple[float, float]] = field(default_factory=list)
    stop: trio.Event = field(default_factory=trio.Event)
    idle: trio.Event = field(default_factory=trio.Event)
    running: int = 0
    amounts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def sent_at(self, message: dict[str, Any]) -> float:
        """When the message was sent by a publisher (-inf for a sale)."""
        if message["type"] == "chat":
            return self.sent.get(("chat", message["text"]), -float("inf"))
        if message["type"] == "bid":
            return self.sent.get(("bid", message["amount"]), -float("inf"))
        return -float("inf")

    def in_flight(self, start: float, end: float) -> int:
        """Publications on their way at some moment from ``start`` to ``end``."""
        return sum(1 for sent, back in self.publications if sent < end and back > start)

    def within(self, start: float, end: float) -> int:
        """Publications sent and back from ``start`` to ``end``: stored in that time."""
        return sum(1 for sent, back in self.publications if sent >= start and back <= end)

    async def chats(self, client: Client) -> None:
        for n in self._until_stopped():
            text = f"{client.user} {n}"
            mark = client.mark()
            self.sent[("chat", text)] = sent = trio.current_time()
            await client.send({"type": "chat", "text": text})
            echo = await client.wait_for(
                lambda m, t=text: m["type"] == "chat" and m["text"] == t, mark
            )
            self.publications.append((sent, echo.at))
        self._stopped()

    async def bids(self, client: Client) -> None:
        for _ in self._until_stopped():
            # Amounts from one counter for all bidders: bids race, some are too low, and a lot
            # may close under one (both errors, to the bidder only, and nothing stored).
            amount = next(self.amounts)
            mark = client.mark()
            self.sent[("bid", amount)] = sent = trio.current_time()
            await client.send({"type": "bid", "amount": amount})
            result = await client.wait_for(
                lambda m, n=amount: (
                    (m["type"] == "bid" and m["amount"] == n) or m["type"] == "error"
                ),
                mark,
            )
            if result.message["type"] == "bid":
                self.publications.append((sent, result.at))
            else:
                assert result.message["code"] in ("too_low", "lot_closed"), result.message
        self._stopped()

    def _until_stopped(self) -> Any:
        self.running += 1
        return itertools.takewhile(lambda _: not self.stop.is_set(), itertools.count(1))

    def _stopped(self) -> None:
        self.running -= 1
        if self.running == 0:
            self.idle.set()

    async def halt(self) -> None:
        """Stop every publisher; return once each has had its last message back."""
        self.stop.set()
        await self.idle.wait()


@dataclass
class Reconnect:
    since: int
    #: Stored messages published while the client was away (the watcher saw them before the
    #: reconnect began): all of them must be replayed.
    missed: int
    welcome: float  # seconds from the handshake's start to the welcome
    #: Publications on their way while the client reconnected (handshake to welcome)...
    in_flight: int
    #: ... and those sent and stored within that time.
    within: int


# -- 1. reconnects under load ------------------------------------------------------------------


async def test_a_client_resumes_on_the_other_server_with_exactly_what_it_missed(
    redis_server, tmp_path
):
    settings = auction_settings(redis_server.url, lot_seconds=1)  # a sale each second
    publishing = Publishing()
    connections: list[Client] = []
    reconnects: list[Reconnect] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            two_servers(redis_server.url, tmp_path, AUCTION, settings) as (a, b),
            AsyncExitStack() as stack,
        ):
            # A watcher in each process, connected all along.
            wa = await stack.enter_async_context(connected(a, "wa"))
            wb = await stack.enter_async_context(connected(b, "wb"))
            publishers = [
                await stack.enter_async_context(connected(server, user))
                for server, user in ((a, "ann"), (b, "ben"), (a, "amy"), (b, "bea"))
            ]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publishing.chats, publishers[0])
                nursery.start_soon(publishing.chats, publishers[1])
                nursery.start_soon(publishing.bids, publishers[2])
                nursery.start_soon(publishing.bids, publishers[3])

                since: str | None = None
                for i in range(RECONNECTS + 1):
                    server = (a, b)[i % 2]
                    with trio.fail_after(RECONNECT_TIMEOUT):
                        seen_by_watcher = stored(wa)  # before the handshake begins
                        began = trio.current_time()
                        async with connected(server, "rita", since) as rita:
                            welcome = rita.received[0]
                            if since is None:
                                assert "recovered" not in welcome.message
                            else:
                                assert welcome.message["recovered"] is True, (i, welcome)
                                reconnects.append(
                                    Reconnect(
                                        int(since),
                                        len(between(seen_by_watcher, int(since), float("inf"))),
                                        welcome.at - began,
                                        publishing.in_flight(began, welcome.at),
                                        publishing.within(began, welcome.at),
                                    )
                                )
                            # Then live messages: one that a publisher sent after the welcome.
                            await rita.wait_for(
                                lambda m, w=welcome.at: is_stored(m) and publishing.sent_at(m) > w
                            )
                            if i == RECONNECTS:
                                # A sale (the owner task's write) in the range compared.
                                start = offset(stored(connections[0])[0])
                                await wa.wait_for(
                                    lambda m, f=start: m["type"] == "sold" and offset(m) > f
                                )
                                await publishing.halt()
                                # The end: everything stored before it is out.
                                await publishers[0].send({"type": "chat", "text": "the end"})
                                for client in (rita, wa, wb):
                                    await client.wait_for(
                                        lambda m: m["type"] == "chat" and m["text"] == "the end"
                                    )
                        connections.append(rita)
                        since = stored(rita)[-1]["offset"]
                    if i < RECONNECTS:
                        # Away while the others publish: for 0 to 40 messages.
                        await wait_stored(wa, (i * 13) % 41 if i % 5 else 0, int(since))

    # The watchers agree: every stored message, in the same order, in either process.
    watched = {w.user: stored(w) for w in (wa, wb)}
    for messages in watched.values():
        check_stored(messages)
    first, end = offset(stored(connections[0])[0]), int(since)
    reference = between(watched["wa"], first - 1, end)
    assert between(watched["wb"], first - 1, end) == reference
    assert reference[-1]["text"] == "the end"
    assert {m["type"] for m in reference} == {"bid", "chat", "sold"}

    # The reconnecting client's whole sequence, connection after connection: the same one.
    sequence = [m for connection in connections for m in stored(connection)]
    for number, connection in enumerate(connections):
        check_stored(stored(connection))
        resumed_from = offset(stored(connections[number - 1])[-1]) if number else first - 1
        assert offset(stored(connection)[0]) > resumed_from, f"duplicate at reconnect {number}"
    assert sequence == reference

    # Publishing went on during every reconnect, and a live message followed each replay.
    assert all(r.in_flight > 0 for r in reconnects), [r.in_flight for r in reconnects]
    assert len(reconnects) == RECONNECTS
    missed = [r.missed for r in reconnects]
    welcomes = sorted(r.welcome for r in reconnects)
    kinds = Counter(m["type"] for m in reference)
    print(
        f"resume under load: {RECONNECTS} reconnects (a <-> b), the client's {len(reference)} "
        f"stored messages ({kinds['chat']} chats, {kinds['bid']} bids, {kinds['sold']} sales) "
        f"equal the watchers'; missed while away: {min(missed)}-{max(missed)} messages; "
        f"publications on their way during each reconnect: {span(r.in_flight for r in reconnects)}"
        f", sent and stored within it: {span(r.within for r in reconnects)}; "
        f"handshake -> welcome: median "
        f"{ms(statistics.median(welcomes))}, max {ms(welcomes[-1])}"
    )


# -- 2-4. a quiet room: one publisher, one watcher ---------------------------------------------


@dataclass
class Quiet:
    """Two servers with ``AUCTION_HISTORY=5``; pat publishes through a, wes watches in b."""

    a: Server
    b: Server
    pat: Client
    wes: Client
    chats: itertools.count[int] = field(default_factory=itertools.count)
    amounts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def say(self, text: str | None = None) -> dict[str, Any]:
        """pat chats; the message, once the watcher has it."""
        text = text or f"chat {next(self.chats)}"
        await self.pat.send({"type": "chat", "text": text})
        got = await self.wes.wait_for(lambda m: m["type"] == "chat" and m["text"] == text)
        return got.message

    async def bid(self) -> dict[str, Any]:
        """pat outbids pat; the message, once the watcher has it."""
        amount = next(self.amounts)
        await self.pat.send({"type": "bid", "amount": amount})
        got = await self.wes.wait_for(lambda m: m["type"] == "bid" and m["amount"] == amount)
        return got.message

    async def publish(self, count: int) -> list[dict[str, Any]]:
        """``count`` messages, chats and bids in turn."""
        return [await (self.bid() if n % 2 else self.say()) for n in range(count)]

    async def last_seen_by(self, server: Server, user: str) -> dict[str, Any]:
        """A client connects through ``server``, gets a new message, leaves: that message."""
        async with connected(server, user) as client:
            text = f"hello {user} {next(self.chats)}"
            await self.say(text)
            await client.wait_for(lambda m: m["type"] == "chat" and m["text"] == text)
        return stored(client)[-1]

    async def check_no_replay(self, client: Client) -> dict[str, Any]:
        """After the welcome, the first stored message ``client`` gets is a live one, newer than
        every one before; it."""
        newest = offset(stored(self.wes)[-1])
        live = await self.say()
        await client.wait_for(lambda m: m == live)
        assert stored(client) == [live], "replayed: " + repr(stored(client)[:-1])
        assert offset(live) > newest
        return live


@asynccontextmanager
async def quiet_room(redis_url: str, logs: Path) -> AsyncIterator[Quiet]:
    settings = auction_settings(redis_url, history=5)
    async with (
        two_servers(redis_url, logs, AUCTION, settings) as (a, b),
        connected(a, "pat") as pat,
        connected(b, "wes") as wes,
    ):
        yield Quiet(a, b, pat, wes)
    check_stored(stored(wes))


async def test_an_offset_beyond_the_bound_is_not_recovered_and_nothing_is_replayed(
    redis_server, tmp_path
):
    with trio.fail_after(TEST_TIMEOUT):
        async with quiet_room(redis_server.url, tmp_path) as room:
            with trio.fail_after(STEP_TIMEOUT):
                last = await room.last_seen_by(room.a, "rita")
            # Exactly as many as the history keeps: all there.
            with trio.fail_after(STEP_TIMEOUT):
                missed = await room.publish(5)
                async with connected(room.b, "rita", last["offset"]) as rita:
                    assert rita.welcome["recovered"] is True
                    await rita.wait_for(lambda m, end=missed[-1]: m == end)
                    live = await room.say()
                    await rita.wait_for(lambda m: m == live)
                assert stored(rita) == [*missed, live]
            # One more than the history keeps: not recovered, no replay, live messages only.
            with trio.fail_after(STEP_TIMEOUT):
                await room.publish(6)
                async with connected(room.a, "rita", live["offset"]) as rita:
                    assert rita.welcome["recovered"] is False
                    await room.check_no_replay(rita)
            # And far beyond the bound.
            with trio.fail_after(STEP_TIMEOUT):
                async with connected(room.b, "rita", last["offset"]) as rita:
                    assert rita.welcome["recovered"] is False
                    await room.check_no_replay(rita)


async def test_an_unknown_offset_is_not_recovered_and_the_last_one_replays_nothing(
    redis_server, tmp_path
):
    with trio.fail_after(TEST_TIMEOUT):
        async with quiet_room(redis_server.url, tmp_path) as room:
            with trio.fail_after(STEP_TIMEOUT):
                await room.publish(3)
                await room.last_seen_by(room.a, "rita")
            # Offsets this room never gave: from before its first, and above its newest (each
            # check publishes one more: the newest is read again each time).
            unknown: list[Callable[[int], int | str]] = [
                lambda newest: "12345",
                lambda newest: "0",
                lambda newest: newest + 1,
                lambda newest: newest + 10**6,
                lambda newest: "9" * 20,
            ]
            for n, make in enumerate(unknown):
                with trio.fail_after(STEP_TIMEOUT):
                    since = str(make(offset(stored(room.wes)[-1])))
                    async with connected((room.a, room.b)[n % 2], "rita", since) as rita:
                        assert rita.welcome["recovered"] is False, since
                        await room.check_no_replay(rita)
            # The last offset there is (the newest message): up to date, nothing to replay.
            with trio.fail_after(STEP_TIMEOUT):
                newest = stored(room.wes)[-1]
                async with connected(room.b, "rita", newest["offset"]) as rita:
                    assert rita.welcome["recovered"] is True
                    await room.check_no_replay(rita)


async def test_without_since_there_is_no_recovery_and_no_replay(redis_server, tmp_path):
    with trio.fail_after(TEST_TIMEOUT):
        async with quiet_room(redis_server.url, tmp_path) as room:
            with trio.fail_after(STEP_TIMEOUT):
                await room.publish(4)
                await room.last_seen_by(room.a, "rita")
            for server in (room.b, room.a):
                with trio.fail_after(STEP_TIMEOUT):
                    async with connected(server, "rita") as rita:
                        assert "recovered" not in rita.welcome
                        await room.check_no_replay(rita)


# -- the figure: replay of a 100-message gap ---------------------------------------------------


async def test_the_replay_of_a_100_message_gap_is_measured(redis_server, tmp_path):
    settings = auction_settings(redis_server.url)
    to_welcome: list[float] = []
    to_last: list[float] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            two_servers(redis_server.url, tmp_path, AUCTION, settings) as (a, b),
            connected(a, "pat") as pat,
            connected(b, "wes") as wes,
        ):
            since: str | None = None
            for n in range(MEASUREMENTS + 1):
                with trio.fail_after(STEP_TIMEOUT):
                    missed = stored(wes)[-GAP:]
                    began = trio.current_time()
                    async with connected((a, b)[n % 2], "rita", since) as rita:
                        if since is None:  # the first connection: a message to resume from
                            await pat.send({"type": "chat", "text": "hello"})
                            await rita.wait_for(is_stored)
                        else:
                            assert rita.welcome["recovered"] is True
                            last = await rita.wait_for(lambda m, end=missed[-1]: m == end)
                            to_welcome.append(rita.received[0].at - began)
                            to_last.append(last.at - began)
                            assert stored(rita) == missed
                    since = stored(rita)[-1]["offset"]
                    # Away: 100 chats, sent at once.
                    for k in range(GAP):
                        await pat.send({"type": "chat", "text": f"{n}.{k}"})
                    await wait_stored(wes, GAP, int(since))
    print(
        f"replay of a {GAP}-message gap on the other server, from the reconnect's handshake: "
        f"welcome in {ms(statistics.median(to_welcome))}, last replayed message in "
        f"{ms(statistics.median(to_last))} (median of {MEASUREMENTS}; "
        f"min {ms(min(to_last))}, max {ms(max(to_last))})"
    )
