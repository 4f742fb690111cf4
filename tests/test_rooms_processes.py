"""Rooms across real processes: two ``trioweb run`` servers on one real redis-server.

Each test starts tests/rooms_app.py twice (two processes, each on its own loopback port),
sharing the ``redis_server`` fixture's Redis, with short TTLs (``PRESENCE_TTL``,
``LEASE_TTL``), and talks to them with real WebSocket clients (trio-websocket). Crashes are real
too: ``kill -9`` of a server process. What is proved:

1. presence converges on both processes within a second of a join and of a clean leave;
2. a crashed process's member leaves the other process's presence within the presence TTL;
3. one owner at a time: the owner task's ticks all come from one process;
4. a crashed owner is replaced within the lease TTL, and the deadline it kept in the room's
   state is kept (the countdown goes on, it does not start again);
5. concurrent bids through both processes are accepted atomically: every member, in either
   process, sees the same strictly increasing sequence of accepted bids;
6. a room's tasks stop when its last member leaves: no ticks, the lease released in Redis.

The measured figures (convergence, expiry, takeover) are printed: ``pytest -s`` shows them. The
bounds asserted are the guarantees plus ``ALLOWANCE`` for a busy machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio
from helpers import HOST
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from trioweb.broadcast import Broadcast

#: Several server processes or the benchmark harness: `nox -s long` (or `pytest -m long`).
pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parent.parent

PRESENCE_TTL = 1.0
LEASE_TTL = 1.0
LOT_SECONDS = 30.0
TICK = 0.2  # rooms_app.TICK
#: Scheduling allowance on top of a TTL: two cores, other tests, a noisy neighbour.
ALLOWANCE = 0.75
#: Presence must converge within this after a join or a clean leave.
CONVERGENCE = 1.0
#: Every test, servers included, ends within this many seconds.
TEST_TIMEOUT = 40
#: Bounds every loop that polls a server or Redis, in count (trio.fail_after bounds it in time).
MAX_POLLS = 1000
POLL_INTERVAL = 0.02
#: The Rooms' key prefix (rooms_app uses the default).
PREFIX = "trioweb"


# -- the servers -------------------------------------------------------------------------------


@dataclass
class Server:
    """One ``trioweb run tests.rooms_app:app`` process."""

    name: str
    process: trio.Process
    log: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def ws_url(self, room: str, user: str) -> str:
        return f"ws://{HOST}:{self.port}/ws/{room}?user={user}"

    async def status(self) -> dict[str, Any]:
        """``GET /pid``: the pid, the room tasks and owner tasks running, the rooms open."""
        stream = await trio.open_tcp_stream(HOST, self.port)
        async with stream:
            request = f"GET /pid HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            response = b""
            while chunk := await stream.receive_some():
                response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        result: dict[str, Any] = json.loads(body)
        return result

    def kill(self) -> float:
        """``kill -9``; returns when (trio's clock)."""
        self.process.kill()
        return trio.current_time()


async def _announced_port(server: Server) -> int:
    stdout = server.process.stdout
    assert stdout is not None
    output = b""
    while b"\n" not in output:
        chunk = await stdout.receive_some()
        assert chunk, f"{server.name} exited before serving:\n{server.log.read_text()}"
        output += chunk
    line = output.split(b"\n", 1)[0].decode()
    assert line.startswith("trioweb: serving ") and " on http://" in line, line
    return int(line.split(" on http://", 1)[1].split()[0].rsplit(":", 1)[1])


async def _drain(stream: Any) -> None:
    """Nothing is expected on stdout after the announcement: read it anyway, so that a server
    can never block on a full pipe."""
    while await stream.receive_some():
        pass


ROOMS_APP = "tests.rooms_app:app"


@asynccontextmanager
async def two_servers(
    redis_url: str, logs: Path, app: str = ROOMS_APP, settings: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Server, Server]]:
    """Two servers of ``app`` (rooms_app unless told) on ``redis_url`` for the block, killed at
    the end. ``settings``: the app's environment variables (rooms_app's short TTLs unless
    told). Their logs (stderr) must show no error; they are printed if the block failed."""
    if settings is None:
        settings = {
            "ROOMS_REDIS_URL": redis_url,
            "ROOMS_PRESENCE_TTL": str(PRESENCE_TTL),
            "ROOMS_LEASE_TTL": str(LEASE_TTL),
            "ROOMS_LOT_SECONDS": str(LOT_SECONDS),
        }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **settings,
    }
    command = [sys.executable, "-m", "trioweb", "run", app]
    command += ["--host", HOST, "--port", "0", "--no-access-log"]
    servers: list[Server] = []
    ok = False
    async with trio.open_nursery() as nursery:
        try:
            for name in ("server-a", "server-b"):
                log = logs / f"{name}.log"
                with log.open("wb") as stderr:
                    process = await trio.lowlevel.open_process(
                        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr
                    )
                servers.append(Server(name, process, log))
            with trio.fail_after(30):
                async with trio.open_nursery() as starting:
                    for server in servers:

                        async def announced(server: Server = server) -> None:
                            server.port = await _announced_port(server)

                        starting.start_soon(announced)
            for server in servers:
                nursery.start_soon(_drain, server.process.stdout)
                if app == ROOMS_APP:  # (its GET /pid)
                    assert (await server.status())["pid"] == server.pid  # kill -9 hits the server
            yield servers[0], servers[1]
            ok = True
        finally:
            with trio.CancelScope(shield=True):
                for server in servers:
                    if server.process.returncode is None:
                        server.process.kill()
                    await server.process.wait()
            for server in servers:
                if not ok:
                    print(f"--- {server.name} (pid {server.pid}) ---\n{server.log.read_text()}")
    for server in servers:
        logged = server.log.read_text()
        assert "Traceback" not in logged and "[ERROR]" not in logged, logged


# -- the clients -------------------------------------------------------------------------------


@dataclass
class Received:
    at: float  # trio's clock, when the client had it
    message: dict[str, Any]


@dataclass
class Client:
    """A member's WebSocket: every message it receives, with when, read as it arrives."""

    user: str
    server: Server
    ws: WebSocketConnection
    received: list[Received] = field(default_factory=list)
    closed: Any = None
    _arrived: trio.Event = field(default_factory=trio.Event)

    async def read(self) -> None:
        try:
            while True:
                text = await self.ws.get_message()
                self.received.append(Received(trio.current_time(), json.loads(text)))
                self._arrived.set()
                self._arrived = trio.Event()
        except ConnectionClosed as exc:
            self.closed = exc.reason
            self._arrived.set()

    def mark(self) -> int:
        """Where the messages from now on start (for :meth:`wait_for`)."""
        return len(self.received)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], start: int = 0
    ) -> Received:
        """The first message from ``start`` on that satisfies ``predicate``, when it comes."""
        index = start
        while True:
            arrived = self._arrived
            while index < len(self.received):
                if predicate(self.received[index].message):
                    return self.received[index]
                index += 1
            if self.closed is not None:
                raise AssertionError(f"{self.user} was closed ({self.closed}) before it came")
            await arrived.wait()

    async def wait_closed(self) -> Any:
        while self.closed is None:
            await self._arrived.wait()
        return self.closed

    def messages(self, kind: str, start: int = 0) -> list[Received]:
        return [r for r in self.received[start:] if r.message.get("type") == kind]

    @property
    def welcome(self) -> dict[str, Any]:
        return self.received[0].message

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def leave(self) -> float:
        """Close the socket cleanly (1000); returns when the close began."""
        began = trio.current_time()
        await self.ws.aclose()
        return began


@asynccontextmanager
async def member(server: Server, room: str, user: str) -> AsyncIterator[Client]:
    """A member of ``room`` through ``server``, once it has its welcome."""
    async with open_websocket_url(server.ws_url(room, user)) as ws, trio.open_nursery() as reader:
        client = Client(user, server, ws)
        reader.start_soon(client.read)
        welcome = await client.wait_for(lambda m: True)
        assert welcome.message["type"] == "welcome", welcome
        assert welcome.message["pid"] == server.pid
        yield client
        reader.cancel_scope.cancel()


@asynccontextmanager
async def together(*joins: tuple[Server, str, str]) -> AsyncIterator[list[Client]]:
    """Members ``(server, room, user)`` joining at the same moment, for the block."""
    clients: dict[int, Client] = {}
    leave = trio.Event()

    async def hold(i: int, join: tuple[Server, str, str], ready: trio.Event) -> None:
        async with member(*join) as client:
            clients[i] = client
            ready.set()
            await leave.wait()

    async with trio.open_nursery() as nursery:
        readies = []
        for i, join in enumerate(joins):
            readies.append(trio.Event())
            nursery.start_soon(hold, i, join, readies[-1])
        for ready in readies:
            await ready.wait()
        try:
            yield [clients[i] for i in range(len(joins))]
        finally:
            leave.set()


def is_presence(users: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
    expected = sorted(users)
    return lambda m: m["type"] == "presence" and m["users"] == expected


def is_tick(owner: int | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "tick" and (owner is None or m["owner"] == owner)


async def converged(
    observers: Sequence[Client], users: Sequence[str], since: float, marks: Sequence[int]
) -> float:
    """Seconds from ``since`` until every observer was told the presence is ``users``."""
    latest = since
    for observer, mark in zip(observers, marks, strict=True):
        told = await observer.wait_for(is_presence(users), mark)
        latest = max(latest, told.at)
    return latest - since


async def poll(check: Callable[[], Any]) -> Any:
    """``await check()`` until it returns something true; that."""
    for _ in range(MAX_POLLS):
        result = await check()
        if result:
            return result
        await trio.sleep(POLL_INTERVAL)
    raise AssertionError(f"{check} never held")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# -- the tests ---------------------------------------------------------------------------------


async def test_presence_converges_on_both_processes_within_a_second(redis_server, tmp_path):
    room = "lot-presence"
    figures = {}
    with trio.fail_after(TEST_TIMEOUT):
        async with two_servers(redis_server.url, tmp_path) as (a, b), AsyncExitStack() as stack:
            alice = await stack.enter_async_context(member(a, room, "alice"))
            assert alice.welcome["users"] == ["alice"]

            # bob opens the room in process b: b's view starts from the store's snapshot.
            marks, since = [alice.mark()], trio.current_time()
            bob = await stack.enter_async_context(member(b, room, "bob"))
            assert bob.welcome["users"] == ["alice", "bob"]
            figures["join, room new in b, seen by a"] = await converged(
                [alice], ["alice", "bob"], since, marks
            )

            # Joins through each process, seen by the members of both.
            marks, since = [alice.mark(), bob.mark()], trio.current_time()
            carol = await stack.enter_async_context(member(a, room, "carol"))
            assert carol.welcome["users"] == ["alice", "bob", "carol"]
            figures["join through a, seen in a and b"] = await converged(
                [alice, bob], ["alice", "bob", "carol"], since, marks
            )
            marks, since = [alice.mark(), bob.mark(), carol.mark()], trio.current_time()
            dave = await stack.enter_async_context(member(b, room, "dave"))
            assert dave.welcome["users"] == ["alice", "bob", "carol", "dave"]
            figures["join through b, seen in a and b"] = await converged(
                [alice, bob, carol], ["alice", "bob", "carol", "dave"], since, marks
            )

            # Clean leaves through each process, seen by the members of both.
            marks = [alice.mark(), bob.mark(), carol.mark()]
            since = await dave.leave()
            figures["leave through b, seen in a and b"] = await converged(
                [alice, bob, carol], ["alice", "bob", "carol"], since, marks
            )
            marks = [alice.mark(), bob.mark()]
            since = await carol.leave()
            figures["leave through a, seen in a and b"] = await converged(
                [alice, bob], ["alice", "bob"], since, marks
            )

            # bob's leave closes the room in b (its last member there): a still hears of it.
            marks = [alice.mark()]
            since = await bob.leave()
            figures["leave of b's last member, seen in a"] = await converged(
                [alice], ["alice"], since, marks
            )

    for what, seconds in figures.items():
        print(f"presence converged: {what}: {ms(seconds)}")
    slow = {what: seconds for what, seconds in figures.items() if seconds >= CONVERGENCE}
    assert not slow, slow


async def test_a_killed_process_members_leave_within_the_presence_ttl(redis_server, tmp_path):
    room = "lot-crash"
    with trio.fail_after(TEST_TIMEOUT):
        async with two_servers(redis_server.url, tmp_path) as (a, b), AsyncExitStack() as stack:
            alice = await stack.enter_async_context(member(a, room, "alice"))
            mark = alice.mark()
            bob = await stack.enter_async_context(member(b, room, "bob"))
            await alice.wait_for(is_presence(["alice", "bob"]), mark)

            mark = alice.mark()
            killed_at = b.kill()
            gone = await alice.wait_for(is_presence(["alice"]), mark)
            expiry = gone.at - killed_at
            assert gone.message["left"] == ["bob"]
            assert (await bob.wait_closed()).code == 1006  # b is really gone
            assert (await a.status())["room_tasks"] == 1  # and a goes on

            async with coredis.Redis.from_url(redis_server.url) as redis:
                assert await redis.zcard(f"{PREFIX}:presence:{room}") == 1
                assert list(await redis.hkeys(f"{PREFIX}:members:{room}")) == [
                    alice.welcome["id"].encode()
                ]

    print(
        f"presence: a member of a killed process left the other's view {ms(expiry)} after "
        f"kill -9 (presence_ttl {ms(PRESENCE_TTL)})"
    )
    assert expiry < PRESENCE_TTL + ALLOWANCE


async def test_exactly_one_owner_ticks(redis_server, tmp_path):
    room = "lot-owner"
    window = 12  # ticks: 2.4 s
    with trio.fail_after(TEST_TIMEOUT):
        async with two_servers(redis_server.url, tmp_path) as (a, b):
            # Both processes open the room at the same moment: both contend for its lease.
            async with together((a, room, "alice"), (b, room, "bob")) as (alice, bob):
                starts = {alice.user: alice.mark(), bob.user: bob.mark()}
                for client in (alice, bob):
                    start = starts[client.user]
                    await client.wait_for(
                        lambda m, client=client, start=start: (
                            len(client.messages("tick", start)) >= window
                        )
                    )
                # A member joining and leaving on each side meanwhile changes nothing.
                for server, user in ((a, "carol"), (b, "dave")):
                    async with member(server, room, user):
                        pass
                for client in (alice, bob):
                    for _ in range(3):
                        await client.wait_for(is_tick(), client.mark())

    seen = {}
    for client in (alice, bob):
        ticks = [r.message for r in client.messages("tick", starts[client.user])]
        owners = {(tick["owner"], tick["fence"]) for tick in ticks}
        assert len(owners) == 1, f"{client.user} saw ticks of several owners: {ticks}"
        numbers = [tick["n"] for tick in ticks]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        seen[client.user] = (owners.pop(), numbers)
    # The lot closes at the pace of the store's clock: each tick's closes_in is a tick
    # period (at least) below the one before, and over the window as much as time passed.
    ticks = alice.messages("tick", starts["alice"])
    closes_in = [r.message["closes_in"] for r in ticks]
    steps = [x - y for x, y in pairwise(closes_in)]
    assert min(steps) >= TICK - 0.02, steps
    lot_elapsed, wall_elapsed = closes_in[0] - closes_in[-1], ticks[-1].at - ticks[0].at
    assert abs(lot_elapsed - wall_elapsed) < 0.3, (lot_elapsed, wall_elapsed)
    (owner, fence), _ = seen["alice"]
    assert seen["bob"][0] == (owner, fence)
    assert owner in (a.pid, b.pid)
    assert fence == 1  # the only lease ever granted: the other process never got one
    both = set(seen["alice"][1]) & set(seen["bob"][1])
    assert len(both) >= window
    print(
        f"one owner: pid {owner} ({'a' if owner == a.pid else 'b'}, fence {fence}); "
        f"{len(seen['alice'][1])} ticks seen in a, {len(seen['bob'][1])} in b, all from it"
    )


async def test_a_killed_owner_is_replaced_within_the_lease_ttl_and_keeps_the_deadline(
    redis_server, tmp_path
):
    room = "lot-takeover"
    with trio.fail_after(TEST_TIMEOUT):
        async with two_servers(redis_server.url, tmp_path) as (a, b), AsyncExitStack() as stack:
            alice = await stack.enter_async_context(member(a, room, "alice"))
            bob = await stack.enter_async_context(member(b, room, "bob"))
            first = await bob.wait_for(is_tick())
            owner_pid = first.message["owner"]
            owner, heir = (a, b) if owner_pid == a.pid else (b, a)
            watcher = alice if heir is a else bob
            # A few ticks of the first owner, as the heir's member sees them.
            for _ in range(4):
                await watcher.wait_for(is_tick(owner_pid), watcher.mark())
            last_old = watcher.messages("tick")[-1]

            mark = watcher.mark()
            killed_at = owner.kill()
            first_new = await watcher.wait_for(is_tick(heir.pid), mark)
            takeover = first_new.at - killed_at
            # From here on, the heir's ticks only, numbered from its own start.
            for _ in range(3):
                await watcher.wait_for(is_tick(), watcher.mark())
            after = [r.message for r in watcher.messages("tick", mark)]
            assert (await heir.status())["owner_tasks"] == 1

    old, new = last_old.message, first_new.message
    assert all(tick["owner"] == heir.pid for tick in after), after
    assert [tick["n"] for tick in after] == list(range(1, len(after) + 1)), after
    assert new["fence"] > old["fence"]
    # The deadline is the one in the state: the lot went on closing at the pace of the clock.
    lot_elapsed = old["closes_in"] - new["closes_in"]
    wall_elapsed = first_new.at - last_old.at
    print(
        f"takeover: the heir's first tick {ms(takeover)} after kill -9 of the owner "
        f"(lease_ttl {ms(LEASE_TTL)}); closes_in {old['closes_in']:.3f} s -> "
        f"{new['closes_in']:.3f} s over {ms(wall_elapsed)} between the two ticks"
    )
    assert takeover < LEASE_TTL + ALLOWANCE
    assert new["closes_in"] < old["closes_in"] < LOT_SECONDS
    assert abs(lot_elapsed - wall_elapsed) < 0.5, (lot_elapsed, wall_elapsed)


async def test_concurrent_bids_through_both_processes_are_seen_in_one_increasing_order(
    redis_server, tmp_path
):
    room = "lot-bids"
    rounds = 50
    with trio.fail_after(TEST_TIMEOUT):
        async with two_servers(redis_server.url, tmp_path) as (a, b), AsyncExitStack() as stack:
            # Two bidders and a watcher in each process.
            clients = {}
            for server, users in ((a, ("ann", "amy", "wes")), (b, ("ben", "bea", "wyn"))):
                for user in users:
                    clients[user] = await stack.enter_async_context(member(server, room, user))
            everyone = list(clients.values())
            bidders = [clients[user] for user in ("ann", "amy", "ben", "bea")]
            for client in everyone:
                await client.wait_for(is_presence(list(clients)))
            marks = {client.user: client.mark() for client in everyone}
            # Round after round, the four bid at once, each a higher amount than in the round
            # before: 4r+1 .. 4r+4, the top one to each bidder in turn (so that every bidder,
            # through either process, has bids that must be accepted).
            bids: dict[str, list[int]] = {bidder.user: [] for bidder in bidders}
            for r in range(rounds):
                async with trio.open_nursery() as nursery:
                    for k, bidder in enumerate(bidders):

                        async def bid(
                            bidder: Client = bidder, amount: int = 4 * r + (k + r) % 4 + 1
                        ):
                            mark = bidder.mark()
                            bids[bidder.user].append(amount)
                            await bidder.send({"type": "bid", "amount": amount})
                            await bidder.wait_for(
                                lambda m: m["type"] == "bid_result" and m["amount"] == amount, mark
                            )

                        nursery.start_soon(bid)
            top = 4 * rounds
            for client in everyone:
                await client.wait_for(lambda m: m["type"] == "bid" and m["amount"] == top)

    sequences = {}
    for client in everyone:
        announced = [r.message for r in client.messages("bid", marks[client.user])]
        sequences[client.user] = [(m["seq"], m["amount"], m["user"]) for m in announced]
    reference = sequences["ann"]
    for user, sequence in sequences.items():
        assert sequence == reference, f"{user} saw another sequence than ann"
    amounts = [amount for _, amount, _ in reference]
    assert all(x < y for x, y in pairwise(amounts)), amounts
    assert [seq for seq, _, _ in reference] == list(range(1, len(reference) + 1))
    # Each round's top bid beats everything before it: it must have been accepted.
    assert {4 * r + 4 for r in range(rounds)} <= set(amounts)
    for bidder in bidders:
        results = [r.message for r in bidder.messages("bid_result", marks[bidder.user])]
        assert sorted(m["amount"] for m in results) == bids[bidder.user]
        accepted = sorted(m["amount"] for m in results if m["accepted"])
        assert accepted == [amount for _, amount, user in reference if user == bidder.user]
    accepted_via = {
        name: sum(1 for m in clients["ann"].messages("bid") if m.message["via"] == server.pid)
        for name, server in (("a", a), ("b", b))
    }
    print(
        f"bids: {4 * rounds} bids in {rounds} rounds of 4 at once (2 through a, 2 through b); "
        f"{len(reference)} accepted ({accepted_via['a']} through a, {accepted_via['b']} through "
        f"b), one strictly increasing sequence seen alike by all {len(everyone)} members"
    )


async def test_a_rooms_tasks_stop_when_its_last_member_leaves(redis_server, tmp_path):
    room = "lot-closing"
    messages_topic = f"{PREFIX}:room:{room}"
    presence_topic = f"{PREFIX}:presence:{room}"
    owner_key = f"{PREFIX}:owner:{room}"
    observed: list[tuple[float, dict[str, Any]]] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            two_servers(redis_server.url, tmp_path) as (a, b),
            Broadcast(redis_server.url).lifespan() as hub,
            coredis.Redis.from_url(redis_server.url) as redis,
            trio.open_nursery() as nursery,
        ):
            # An observer of the room's messages topic on the broker, not a member: it sees
            # ticks while an owner task runs anywhere, and keeps no room open.
            async def observe(task_status: trio.TaskStatus[None]) -> None:
                async with hub.subscribe(messages_topic, max_buffer=10_000) as subscription:
                    task_status.started()
                    async for item in subscription:
                        assert isinstance(item, str), item
                        observed.append((trio.current_time(), json.loads(item)))

            await nursery.start(observe)
            async with AsyncExitStack() as stack:
                alice = await stack.enter_async_context(member(a, room, "alice"))
                bob = await stack.enter_async_context(member(b, room, "bob"))
                owner_pid = (await alice.wait_for(is_tick())).message["owner"]
                first, second = (alice, bob) if owner_pid == a.pid else (bob, alice)
                assert await redis.exists([owner_key]) == 1

                # The owner's last member leaves: its room closes there, it releases the lease,
                # and the other process takes over at once (not at the lease's expiry).
                mark = second.mark()
                left_at = await first.leave()
                handover = (await second.wait_for(is_tick(second.server.pid), mark)).at - left_at

                async def closed_in(server: Server) -> bool:
                    status = await server.status()
                    return (
                        status["rooms"] == [] and not status["owner_tasks"] + status["room_tasks"]
                    )

                assert await poll(lambda: closed_in(first.server))
                assert (await second.server.status())["owner_tasks"] == 1

                # The last member leaves: the room closes in the last process too.
                left_at = await second.leave()
                assert await poll(lambda: closed_in(second.server))

            async def lease_released() -> bool:
                return await redis.exists([owner_key]) == 0

            assert await poll(lease_released)
            released = trio.current_time() - left_at

            async def topics_left() -> bool:
                counts = await redis.pubsub_numsub(messages_topic, presence_topic)
                return {_text(k): v for k, v in counts.items()} == {
                    messages_topic: 1,  # the observer's
                    presence_topic: 0,
                }

            assert await poll(topics_left)
            # No presence left behind in Redis (a heartbeat on its way used to put a member who
            # had just left back in, announced; with the room closed everywhere, for good).
            left_behind = await redis.zrange(presence_topic, 0, -1, withscores=True)
            assert not left_behind, (
                left_behind,
                await redis.hgetall(f"{PREFIX}:members:{room}"),
                await redis.time(),
                {c.user: c.welcome["id"] for c in (alice, bob)},
            )
            # The state outlives the room: the next owner will find the lot's deadline.
            doc = await redis.hget(f"{PREFIX}:state:{room}", "doc")
            assert doc is not None and "deadline" in json.loads(doc)

            # No tick from anyone any more: none during three tick periods.
            ticks = len(observed)
            with trio.move_on_after(3 * TICK):
                await trio.sleep_forever()
            late = observed[ticks:]
            nursery.cancel_scope.cancel()

    ticks_seen = [m for _, m in observed if m["type"] == "tick"]
    assert {m["owner"] for m in ticks_seen} == {a.pid, b.pid}  # both owned, one after the other
    assert late == []
    print(
        f"closing: the owner's last member left, the other process ticked {ms(handover)} "
        f"later; the last member left, lease released in Redis within {ms(released)}"
    )
    assert handover < LEASE_TTL / 2  # released, not expired (that takes 2/3 of the TTL at least)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
