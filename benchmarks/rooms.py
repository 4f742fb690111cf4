"""Rooms, measured in-process: ``python -m benchmarks --rooms`` (see docs/performance.md).

The harness (:func:`rooms_main`) starts a redis-server of its own on a unix socket in a
temporary directory, runs each part in a process of its own, once with the in-process store
and once on Redis, alternating over the rounds, and stops the server at the end. A part is
``python -m benchmarks.rooms PART STORE PLAN [URL]``; it prints one line of JSON:

- ``joins``: the time of a join and of a leave (a member joining an open room, the first join
  that opens a room, the last leave that closes it, also with an owner task declared), this
  process's CPU time per join or leave, and on Redis the commands, bytes and Redis CPU time
  each costs;
- ``heartbeat`` (Redis): the commands, bytes and Redis CPU time of one presence heartbeat of
  one room, and of one lease renewal;
- ``memory`` (in-process): traced memory per member, next to a bare hub subscription and a
  parked task;
- ``presence``: the time from a join (or a leave) until the room's presence, as another
  ``Rooms`` sees it, has it;
- ``fanout``: a room's publish against a hub publish to as many subscribers, in alternating
  windows;
- ``history``: what keeping messages costs: a stored publish (``room.history.append``)
  against a plain one (``room.publish``), and a state update with ``history=True`` against one
  without, in alternating windows (time, CPU and, on Redis, commands per publish); the memory
  of a stored message and of a room's history (Redis ``used_memory``; in-process, traced); the
  time to recover N messages, alone and as part of a join with ``since``.

Every member, subscription and parked task is a task of its own, as a connection's handler
would hold it. Nothing here is checked against a target: the figures are for the docs.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

#: Every part, and the stores it runs with.
PARTS: dict[str, tuple[str, ...]] = {
    "joins": ("memory", "redis"),
    "heartbeat": ("redis",),
    "memory": ("memory",),
    "presence": ("memory", "redis"),
    "fanout": ("memory", "redis"),
    "history": ("memory", "redis"),
}
#: Long enough that no heartbeat or renewal falls into a window that does not measure them.
NEVER = 24 * 3600.0
#: The presence TTL of the heartbeat part (a pass over the rooms every quarter second), and
#: its lease TTL (a renewal every half second: at 200 rooms, shorter ones lose leases to a
#: busy CPU, and the window then counts acquisitions too).
HEARTBEAT_TTL = 1.0
RENEW_TTL = 1.5
#: What the fan-out publishes (a short chat message).
MESSAGE = '{"type":"chat","user":"ada","text":"hello, room"}'
#: The longest any single wait in a part may take before the part fails.
WAIT = 15.0
#: Commands that are ours (measuring), not the rooms'.
OURS = ("info", "pubsub|", "flushall", "ping", "hello", "client|", "command")
#: The commands a client sends (the rest run inside the scripts): one round trip each.
ROUND_TRIPS = ("evalsha", "eval", "script|load", "subscribe", "unsubscribe")
#: Commands that no script of the rooms runs: where they are counted, the client sent them.
CLIENT_ONLY = ("hmget",)
#: A stored message of 100 bytes (the room puts ``"offset":"<16 digits>",`` in front).
STORED = '{"type":"chat","user":"ada","text":"' + "x" * 62 + '"}'


@dataclass(frozen=True)
class RoomsPlan:
    """How much of everything a rooms run does."""

    name: str
    rounds: int
    #: Members joining (then leaving) one open room, one after the other.
    joins: int
    #: Rooms opened by a first join (then closed by the last leave), one after the other.
    opens: int
    #: Members held at once for the memory figures; also split into ``memory_rooms`` rooms.
    members: int
    memory_rooms: int
    #: Heartbeats measured in rooms of ``(rooms, members each)``, over ``heartbeat_seconds``.
    heartbeats: tuple[tuple[int, int], ...]
    heartbeat_seconds: float
    #: Rooms owned while lease renewals are counted.
    renew_rooms: int
    #: Joins and leaves whose arrival in the other view is timed.
    presence_changes: int
    #: Subscribers of the fan-out, publishes per window, windows per kind.
    fanout_sizes: tuple[int, ...]
    fanout_publishes: int
    fanout_windows: int
    #: Publishes per window and windows per kind of the history's costs; recoveries (and
    #: joins with ``since``) timed for each number of messages recovered; messages stored in
    #: one room, and rooms given one message each, for the memory figures.
    history_publishes: int
    history_windows: int
    history_recover: tuple[int, ...]
    history_recoveries: int
    history_messages: int
    history_rooms: int


ROOMS_PLANS = {
    "full": RoomsPlan(
        name="full",
        rounds=3,
        joins=2000,
        opens=500,
        members=2000,
        memory_rooms=200,
        heartbeats=((200, 10), (1, 2000)),
        heartbeat_seconds=3.0,
        renew_rooms=200,
        presence_changes=500,
        fanout_sizes=(1, 100, 1000),
        fanout_publishes=20,
        fanout_windows=10,
        history_publishes=200,
        history_windows=10,
        history_recover=(100, 1000),
        history_recoveries=100,
        history_messages=10_000,
        history_rooms=1000,
    ),
    "quick": RoomsPlan(
        name="quick",
        rounds=1,
        joins=500,
        opens=100,
        members=2000,
        memory_rooms=200,
        heartbeats=((200, 10), (1, 2000)),
        heartbeat_seconds=1.5,
        renew_rooms=100,
        presence_changes=200,
        fanout_sizes=(1, 1000),
        fanout_publishes=10,
        fanout_windows=4,
        history_publishes=100,
        history_windows=4,
        history_recover=(100, 1000),
        history_recoveries=40,
        history_messages=10_000,
        history_rooms=200,
    ),
    # Seconds long: proves the harness works; its numbers mean nothing.
    "smoke": RoomsPlan(
        name="smoke",
        rounds=1,
        joins=40,
        opens=10,
        members=100,
        memory_rooms=10,
        heartbeats=((5, 4),),
        heartbeat_seconds=0.6,
        renew_rooms=5,
        presence_changes=10,
        fanout_sizes=(1, 20),
        fanout_publishes=3,
        fanout_windows=2,
        history_publishes=10,
        history_windows=2,
        history_recover=(10, 50),
        history_recoveries=5,
        history_messages=200,
        history_rooms=10,
    ),
}


# -- measuring -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank), NaN if there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def spread(prefix: str, nanoseconds: list[int], unit: float = 1e3) -> dict[str, float]:
    """Median and p95 of ``nanoseconds``, in µs (``unit`` 1e3) or ms (1e6)."""
    suffix = "us" if unit == 1e3 else "ms"
    values = [ns / unit for ns in nanoseconds]
    return {
        f"{prefix}.p50_{suffix}": statistics.median(values) if values else float("nan"),
        f"{prefix}.p95_{suffix}": percentile(values, 0.95),
    }


async def until(check: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    """Wait (polling, bounded) until ``check()`` holds."""
    deadline = trio.current_time() + limit
    while not check():
        if trio.current_time() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {limit:g} s")
        await trio.sleep(0.005)


def cpu_us(pid: int) -> float:
    """The CPU time of ``pid``'s main thread (where redis-server runs its commands), in µs."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e3


class Meter:
    """``INFO commandstats`` and ``INFO stats`` of our redis-server, and its CPU time.

    A window's delta has the meter's own cost taken out (what an empty window measures: the
    INFO commands, the settling publish and their bytes), and our other commands left out.
    """

    def __init__(self, client: Any, pid: int) -> None:
        self.client = client
        self.pid = pid
        self.overhead: dict[str, float] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[Meter]:
        import coredis

        client = coredis.Redis.from_url(url, decode_responses=True)
        async with client:
            await client.flushall()
            server = await client.info("server")
            yield cls(client, int(server["process_id"]))

    async def snapshot(self) -> dict[str, float]:
        commands = await self.client.info("commandstats")
        stats = await self.client.info("stats")
        out = {
            f"cmd.{name.removeprefix('cmdstat_')}": float(value["calls"])
            for name, value in commands.items()
        }
        out["bytes_in"] = float(stats["total_net_input_bytes"])
        out["bytes_out"] = float(stats["total_net_output_bytes"])
        out["redis_us"] = cpu_us(self.pid)
        return out

    def delta(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        keys = set(before) | set(after)
        out = {k: after.get(k, 0.0) - before.get(k, 0.0) - self.overhead.get(k, 0.0) for k in keys}
        return {
            k: v
            for k, v in out.items()
            if not (k.startswith("cmd.") and k[4:].startswith(OURS))
            and (v or not k.startswith("cmd."))
        }


def sent_by_client(commands: Any) -> list[str]:
    """Which of ``commands`` (names) the client sent: the scripts' calls, subscriptions, the
    commands no script runs, and every command when no script ran at all."""
    scripted = any(name in ("evalsha", "eval") for name in commands)
    return [name for name in commands if name in ROUND_TRIPS or name in CLIENT_ONLY or not scripted]


def per_op(prefix: str, delta: dict[str, float], ops: int) -> dict[str, float]:
    """A window's delta divided by the operations in it: commands by name, the round trips
    (commands sent by the client), every command Redis ran, bytes each way, Redis CPU µs."""
    out = {f"{prefix}.{key}": value / ops for key, value in delta.items()}
    commands = {k[4:]: v for k, v in delta.items() if k.startswith("cmd.")}
    out[f"{prefix}.round_trips"] = sum(commands[k] for k in sent_by_client(commands)) / ops
    out[f"{prefix}.commands"] = sum(commands.values()) / ops
    return out


class Settler:
    """Wait until everything a window set off has happened: a marker published through the
    hub after the window comes back (so every announcement published before it has been
    delivered), then a few scheduler passes for the tasks it woke."""

    TOPIC = "bench:settle"

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.subscription: Any = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Settler]:
        async with self.hub.subscribe(self.TOPIC, max_buffer=16) as subscription:
            self.subscription = subscription
            yield self

    async def __call__(self) -> None:
        await self.hub.publish(self.TOPIC, "settled")
        with trio.fail_after(WAIT):
            while await self.subscription.receive() != "settled":
                pass
        for _ in range(5):
            await trio.lowlevel.checkpoint()


@dataclass
class Held:
    """A task holding a context open: the time its entry and its exit took."""

    enter_ns: int
    leave: trio.Event
    done: trio.Event
    value: Any
    exit_ns: int = 0


async def hold(
    make: Callable[[], Any], *, task_status: trio.TaskStatus[Held] = trio.TASK_STATUS_IGNORED
) -> None:
    """Enter ``make()`` (timed), report, wait to be told to leave, leave (timed)."""
    leave, done = trio.Event(), trio.Event()
    context = make()
    started = time.perf_counter_ns()
    async with context as value:
        held = Held(time.perf_counter_ns() - started, leave, done, value)
        task_status.started(held)
        await leave.wait()
        started = time.perf_counter_ns()
    held.exit_ns = time.perf_counter_ns() - started
    done.set()


async def enter_all(nursery: trio.Nursery, makers: list[Callable[[], Any]]) -> list[Held]:
    """One holder per maker, one after the other."""
    return [await nursery.start(hold, make) for make in makers]


async def leave_all(held: list[Held]) -> None:
    """Each holder leaves in turn (the next once the previous has left)."""
    for one in held:
        one.leave.set()
        with trio.fail_after(WAIT):
            await one.done.wait()


@contextlib.asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    """The baseline holder's context: a task that joins nothing."""
    yield None


# -- the parts -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(url: str | None, *rooms_list: Any) -> AsyncIterator[tuple[Any, Meter | None]]:
    """The hub (the first Rooms') and every Rooms running, and the meter on Redis."""
    async with contextlib.AsyncExitStack() as stack:
        meter = await stack.enter_async_context(Meter.connect(url)) if url else None
        await stack.enter_async_context(rooms_list[0].hub.lifespan())
        for rooms in rooms_list:
            await stack.enter_async_context(rooms.lifespan())
        yield rooms_list[0].hub, meter


async def calibrate(meter: Meter | None, settle: Settler) -> None:
    """What an empty window measures, taken out of every window after it."""
    if meter is None:
        return
    await settle()
    first = await meter.snapshot()
    await settle()
    second = await meter.snapshot()
    meter.overhead = {k: second.get(k, 0.0) - first.get(k, 0.0) for k in second}
    meter.overhead.pop("redis_us", None)  # CPU time: an empty window's is noise


class Windows:
    """Measured windows: what an action sets off, settled; this process's CPU time per
    operation and, on Redis, the delta of the meter per operation."""

    def __init__(self, meter: Meter | None, settle: Settler) -> None:
        self.meter = meter
        self.settle = settle
        self.out: dict[str, float] = {}

    async def measure(
        self,
        name: str,
        ops: int,
        action: Callable[[], Awaitable[Any]],
        after: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Run ``action()``, then wait for what it set off (and ``after()``), all measured."""
        meter = self.meter
        before = await meter.snapshot() if meter else {}
        cpu = time.process_time()
        await action()
        await self.settle()
        if after is not None:
            await after()
        cpu = time.process_time() - cpu
        if meter is not None:
            self.out.update(per_op(name, meter.delta(before, await meter.snapshot()), ops))
        self.out[f"{name}.cpu_us"] = 1e6 * cpu / ops


async def enter_into(held: list[Held], nursery: trio.Nursery, makers: list[Any]) -> None:
    """:func:`enter_all`, into ``held``."""
    held.extend(await enter_all(nursery, makers))


async def owners_in(rooms: Any, names: list[str]) -> None:
    """Wait until this process holds the lease of each room of ``names``."""
    await until(
        lambda: all(getattr(rooms.get(name), "lease", None) for name in names),
        "every room's lease",
    )


async def closed(rooms: Any, hub: Any, meter: Meter | None) -> None:
    """Wait until every room of ``rooms`` has closed here and left its topics (on Redis, until
    the broker has no subscription of them either)."""
    prefix = f"{rooms.prefix}:"
    await until(
        lambda: not any(topic.startswith(prefix) for topic in hub.topics()),
        "the rooms to close",
    )
    if meter is not None:
        deadline = trio.current_time() + WAIT
        while await meter.client.pubsub_channels(f"{prefix}*"):
            if trio.current_time() > deadline:
                raise RuntimeError("the broker kept the closed rooms' subscriptions")
            await trio.sleep(0.005)


async def opening(
    windows: Windows, nursery: trio.Nursery, rooms: Any, label: str, count: int, owned: bool
) -> None:
    """``count`` first joins, each opening a room (``label``), then the last leaves, each
    closing one (``label`` with ``close`` for ``open``); with ``owned``, the rooms have an
    owner task, and the first joins' window lasts until this process holds every lease."""
    hub = rooms.hub
    close = label.replace("open", "close")
    warm: list[Held] = []
    await enter_into(warm, nursery, [partial(rooms.join, f"warm{i}", user="u") for i in range(5)])
    await leave_all(warm)
    await closed(rooms, hub, windows.meter)
    names = [f"room{i}" for i in range(count)]
    opened: list[Held] = []
    makers = [partial(rooms.join, name, user="first") for name in names]
    await windows.measure(
        label,
        count,
        partial(enter_into, opened, nursery, makers),
        partial(owners_in, rooms, names) if owned else None,
    )
    await windows.measure(
        close, count, partial(leave_all, opened), partial(closed, rooms, hub, windows.meter)
    )
    windows.out.update(spread(label, [h.enter_ns for h in opened]))
    windows.out.update(spread(close, [h.exit_ns for h in opened]))


async def timed(name: str, count: int, action: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """``action()`` ``count`` times, one after the other (after 20 not counted): the median
    and p95 of its time, and this process's CPU time per call, in µs."""
    for _ in range(20):
        await action()
    times = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter_ns()
        await action()
        times.append(time.perf_counter_ns() - started)
    return {**spread(name, times), f"{name}.cpu_us": 1e6 * (time.process_time() - cpu) / count}


async def references(client: Any, hub: Any, count: int) -> dict[str, float]:
    """What a join's parts cost alone through the same client library: a bare PING, the
    EVALSHA of a script that does nothing, a hub publish nobody receives, and a hub publish
    received back over pub/sub."""
    from coredis.commands.script import Script

    nothing_script = Script(script="return 1")
    out = await timed("ref.ping", count, client.ping)
    out |= await timed("ref.evalsha", count, partial(nothing_script, [], [], client=client))
    out |= await timed("ref.publish", count, partial(hub.publish, "bench:nobody", "x"))
    async with hub.subscribe("bench:echo") as subscription:

        async def echo() -> None:
            await hub.publish("bench:echo", "x")
            await subscription.receive()

        out |= await timed("ref.publish_receive", count, echo)
    return out


async def own_forever(room: Any) -> None:
    """The owner task of the rooms that have one: holds the lease, does nothing."""
    await trio.sleep_forever()


async def part_joins(plan: RoomsPlan, url: str | None) -> dict[str, float]:
    from trioweb.broadcast import Broadcast
    from trioweb.rooms import Rooms

    hub = Broadcast(url)
    plain = Rooms(hub, prefix="bj", presence_ttl=NEVER, lease_ttl=NEVER)
    owned = Rooms(hub, prefix="bo", presence_ttl=NEVER, lease_ttl=NEVER)
    owned.owner_task(own_forever)
    n = plan.joins
    async with running(url, plain, owned) as (hub, meter), trio.open_nursery() as nursery:
        settle = Settler(hub)
        async with settle.open():
            await calibrate(meter, settle)
            windows = Windows(meter, settle)
            measure = windows.measure

            # The baseline: as many holder tasks that join nothing, for the CPU figures.
            baseline: list[Held] = []
            await measure(
                "baseline.enter", n, partial(enter_into, baseline, nursery, [nothing] * n)
            )
            await measure("baseline.exit", n, partial(leave_all, baseline))

            # A member joining a room open in this process, and leaving it (not the last).
            anchor = await nursery.start(hold, partial(plain.join, "hall", user="anchor"))
            warm: list[Held] = []
            await enter_into(warm, nursery, [partial(plain.join, "hall", user="warm")] * 50)
            await leave_all(warm)
            members: list[Held] = []
            makers = [partial(plain.join, "hall", user=f"user{i}") for i in range(n)]
            await measure("join", n, partial(enter_into, members, nursery, makers))
            await measure("leave", n, partial(leave_all, members))
            windows.out.update(spread("join", [m.enter_ns for m in members]))
            windows.out.update(spread("leave", [m.exit_ns for m in members]))
            await leave_all([anchor])
            if meter is not None:
                windows.out.update(await references(meter.client, hub, n))

            # The first join, which opens the room in this process (and on Redis subscribes
            # to its two topics and reads its presence), and the last leave, which closes it.
            await opening(windows, nursery, plain, "open", plan.opens, owned=False)
            await opening(windows, nursery, owned, "open_owned", plan.opens, owned=True)

    out = windows.out
    for key in ("join", "open", "open_owned"):
        out[f"{key}.cpu_us"] -= out["baseline.enter.cpu_us"]
    for key in ("leave", "close", "close_owned"):
        out[f"{key}.cpu_us"] -= out["baseline.exit.cpu_us"]
    return {k: v for k, v in out.items() if not k.startswith("baseline.")}


async def heartbeats(
    plan: RoomsPlan, url: str, label: str, room_count: int, each: int, owner: bool
) -> dict[str, float]:
    """``room_count`` rooms of ``each`` members, then a window in which all they do is their
    heartbeat (``owner``: their lease renewals): its cost per heartbeat (renewal) of a room."""
    from trioweb.broadcast import Broadcast
    from trioweb.rooms import Rooms

    out: dict[str, float] = {}
    rooms = Rooms(
        Broadcast(url),
        prefix="bh",
        presence_ttl=NEVER if owner else HEARTBEAT_TTL,
        lease_ttl=RENEW_TTL if owner else NEVER,
    )
    if owner:
        rooms.owner_task(own_forever)
    async with running(url, rooms) as (hub, meter), trio.open_nursery() as nursery:
        assert meter is not None
        settle = Settler(hub)
        async with settle.open():
            await calibrate(meter, settle)
            names = [f"r{i}" for i in range(room_count)]
            makers = [partial(rooms.join, x, user=f"u{u}") for x in names for u in range(each)]
            held = await enter_all(nursery, makers)
            if owner:
                await owners_in(rooms, names)
            await trio.sleep(HEARTBEAT_TTL / 2)
            await settle()
            before = await meter.snapshot()
            cpu = time.process_time()
            await trio.sleep(plan.heartbeat_seconds)
            await settle()
            cpu = time.process_time() - cpu
            delta = meter.delta(before, await meter.snapshot())
            # A heartbeat's script runs one ZRANGEBYSCORE, a renewal's one GET.
            beats = delta.get("cmd.get" if owner else "cmd.zrangebyscore", 0.0)
            if not beats:
                raise RuntimeError(f"{label}: no heartbeat or renewal in the window")
            out.update(per_op(label, delta, int(beats)))
            out[f"{label}.cpu_us"] = 1e6 * cpu / beats
            out[f"{label}.per_room_s"] = beats / room_count / plan.heartbeat_seconds
            await leave_all(held)
    return out


async def part_heartbeat(plan: RoomsPlan, url: str | None) -> dict[str, float]:
    """What a presence heartbeat and a lease renewal cost on Redis, per room."""
    assert url is not None, "the heartbeat is measured on Redis"
    out: dict[str, float] = {}
    for room_count, each in plan.heartbeats:
        label = f"heartbeat.{room_count}x{each}"
        out.update(await heartbeats(plan, url, label, room_count, each, owner=False))
    out.update(await heartbeats(plan, url, "renew", plan.renew_rooms, 1, owner=True))
    return out


async def traced_per_holder(
    nursery: trio.Nursery, settle: Settler, rooms: Any, makers: list[Any], warm: int
) -> float:
    """Traced memory per holder of ``makers``, in KiB, after a first batch of ``warm`` let go
    (so that what is made once, code and caches, is not counted)."""
    first = await enter_all(nursery, makers[:warm])
    await leave_all(first)
    await closed(rooms, rooms.hub, None)
    await settle()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    held = await enter_all(nursery, makers)
    await settle()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    await leave_all(held)
    await closed(rooms, rooms.hub, None)
    return (after - before) / len(makers) / 1024


async def part_memory(plan: RoomsPlan, url: str | None) -> dict[str, float]:
    """Traced memory per holder task: parked, holding a hub subscription, holding a room
    membership (all in one topic or room, then spread over ``memory_rooms``)."""
    from trioweb.broadcast import Broadcast
    from trioweb.rooms import Rooms

    hub = Broadcast(url)
    rooms = Rooms(hub, prefix="bm", presence_ttl=NEVER, lease_ttl=NEVER)
    out: dict[str, float] = {}
    n = plan.members
    each = max(1, n // plan.memory_rooms)
    kinds: dict[str, list[Any]] = {
        "task": [nothing] * n,
        "subscription": [partial(hub.subscribe, "one") for i in range(n)],
        "member": [partial(rooms.join, "one", user=f"user{i}") for i in range(n)],
        "subscription_spread": [partial(hub.subscribe, f"topic{i // each}") for i in range(n)],
        "member_spread": [
            partial(rooms.join, f"room{i // each}", user=f"user{i}") for i in range(n)
        ],
    }
    async with running(url, rooms) as (hub, _), trio.open_nursery() as nursery:
        settle = Settler(hub)
        async with settle.open():
            for kind, makers in kinds.items():
                kib = await traced_per_holder(nursery, settle, rooms, makers, 2 * each)
                out[f"memory.{kind}.kib"] = kib
    out["memory.members"] = n
    out["memory.rooms"] = n // each
    return out


async def part_presence(plan: RoomsPlan, url: str | None) -> dict[str, float]:
    """The time from a join (a leave) until the room's presence, seen from another ``Rooms``
    on another hub, has it; in-process, the same room's presence watched by another task."""
    from trioweb.broadcast import Broadcast
    from trioweb.rooms import Rooms

    here = Rooms(Broadcast(url), prefix="bp", presence_ttl=NEVER, lease_ttl=NEVER)
    there = here
    instances = [here]
    if url is not None:
        there = Rooms(Broadcast(url), prefix="bp", presence_ttl=NEVER, lease_ttl=NEVER)
        instances.append(there)
    joined: list[int] = []
    left: list[int] = []
    async with contextlib.AsyncExitStack() as stack:
        if url is not None:  # connected only to start from an empty Redis
            await stack.enter_async_context(Meter.connect(url))
        for rooms in instances:
            await stack.enter_async_context(rooms.hub.lifespan())
            await stack.enter_async_context(rooms.lifespan())
        nursery = await stack.enter_async_context(trio.open_nursery())
        watcher = await nursery.start(hold, partial(there.join, "lobby", user="watcher"))
        anchor = await nursery.start(hold, partial(here.join, "lobby", user="anchor"))
        changes = watcher.value.room.presence.changes()

        async def seen(entry_id: str, joining: bool) -> int:
            with trio.fail_after(WAIT):
                async for change in changes:
                    entries = change.joined if joining else change.left
                    if any(entry.id == entry_id for entry in entries):
                        return time.perf_counter_ns()
            raise RuntimeError("the presence changes ended")

        for i in range(plan.presence_changes + 5):  # the first five warm up
            started = time.perf_counter_ns()
            held = await nursery.start(hold, partial(here.join, "lobby", user=f"user{i}"))
            entry_id = held.value.id
            arrived = await seen(entry_id, True)
            started_leave = time.perf_counter_ns()
            held.leave.set()
            gone = await seen(entry_id, False)
            with trio.fail_after(WAIT):
                await held.done.wait()
            if i >= 5:
                joined.append(arrived - started)
                left.append(gone - started_leave)
        await leave_all([anchor, watcher])
    return {
        **spread("presence.join", joined, 1e6),
        **spread("presence.leave", left, 1e6),
    }


class Tally:
    """Deliveries counted by the readers; ``event`` is set once ``target`` is reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event = trio.Event()

    def reset(self, target: int) -> None:
        self.count, self.target, self.event = 0, target, trio.Event()


async def read(subscription: Any, tally: Tally) -> None:
    """Count what arrives, until the subscription ends."""
    async for _ in subscription:
        tally.count += 1
        if tally.count >= tally.target:
            tally.event.set()


@contextlib.asynccontextmanager
async def hub_reader(hub: Any, topic: str, tally: Tally) -> AsyncIterator[None]:
    """A bare hub subscription and the task that reads it."""
    async with hub.subscribe(topic) as subscription, trio.open_nursery() as nursery:
        nursery.start_soon(read, subscription, tally)
        yield
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def room_reader(rooms: Any, room: str, user: str, tally: Tally) -> AsyncIterator[None]:
    """A room member and the task that reads its queue."""
    async with rooms.join(room, user=user) as member, trio.open_nursery() as nursery:
        nursery.start_soon(read, member.messages, tally)
        yield
        nursery.cancel_scope.cancel()


async def fanout_to(
    plan: RoomsPlan, rooms: Any, nursery: trio.Nursery, size: int
) -> dict[str, float]:
    """``size`` hub subscribers and ``size`` room members; alternating windows of publishes
    to each."""
    hub = rooms.hub
    tallies = {"hub": Tally(), "room": Tally()}
    topic, name = f"plain{size}", f"fan{size}"
    makers = [partial(hub_reader, hub, topic, tallies["hub"])] * size + [
        partial(room_reader, rooms, name, f"user{i}", tallies["room"]) for i in range(size)
    ]
    held = await enter_all(nursery, makers)
    room = rooms.get(name)
    assert room is not None
    publish = {"hub": partial(hub.publish, topic, MESSAGE), "room": partial(room.publish, MESSAGE)}
    cpu: dict[str, list[float]] = {"hub": [], "room": []}
    wall: dict[str, list[int]] = {"hub": [], "room": []}
    ratios: list[float] = []
    for w in range(plan.fanout_windows + 1):  # the first window warms up
        this: dict[str, float] = {}
        for kind in ("hub", "room") if w % 2 else ("room", "hub"):
            tally = tallies[kind]
            started_cpu = time.process_time()
            walls = []
            for _ in range(plan.fanout_publishes):
                tally.reset(size)
                started = time.perf_counter_ns()
                await publish[kind]()
                with trio.fail_after(WAIT):
                    await tally.event.wait()
                walls.append(time.perf_counter_ns() - started)
            used = time.process_time() - started_cpu
            this[kind] = 1e6 * used / (plan.fanout_publishes * size)
            if w:
                cpu[kind].append(this[kind])
                wall[kind].extend(walls)
        if w and this["hub"] > 0:
            ratios.append(this["room"] / this["hub"])
    await leave_all(held)
    out: dict[str, float] = {}
    prefix = f"fanout.{size}"
    for kind in ("hub", "room"):
        out[f"{prefix}.{kind}.us_per_delivery"] = statistics.median(cpu[kind])
        out.update(spread(f"{prefix}.{kind}.publish", wall[kind]))
    out[f"{prefix}.cpu_ratio"] = statistics.median(ratios) if ratios else float("nan")
    return out


async def part_fanout(plan: RoomsPlan, url: str | None) -> dict[str, float]:
    """``room.publish`` against ``hub.publish`` to as many subscribers: publish, wait until
    every subscriber has it, publish again; windows of each alternate."""
    from trioweb.broadcast import Broadcast
    from trioweb.rooms import Rooms

    rooms = Rooms(Broadcast(url), prefix="bf", presence_ttl=NEVER, lease_ttl=NEVER)
    out: dict[str, float] = {}
    async with running(url, rooms), trio.open_nursery() as nursery:
        for size in plan.fanout_sizes:
            out.update(await fanout_to(plan, rooms, nursery, size))
    return out


# -- history -------------------------------------------------------------------------------


async def drained_member(
    rooms: Any,
    room: str,
    user: str,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A member of ``room`` whose queue a task of its own empties; reports the member."""
    async with rooms.join(room, user=user) as member, trio.open_nursery() as nursery:

        async def drain() -> None:
            async for _ in member.messages:
                pass

        nursery.start_soon(drain)
        task_status.started(member)
        await trio.sleep_forever()


async def alternating(
    windows: Windows, actions: dict[str, Callable[[], Awaitable[Any]]], count: int, rounds: int
) -> dict[str, float]:
    """Windows of ``count`` calls of each action, alternating (the first round warms up): the
    median and p95 of one call's time, this process's CPU time per call (what the call set
    off included: the window ends when it has settled), and on Redis the meter's delta per
    call."""
    meter, settle = windows.meter, windows.settle
    # Again: the meter's own INFO replies grow with every new kind of command Redis has run.
    await calibrate(meter, settle)
    walls: dict[str, list[int]] = {kind: [] for kind in actions}
    cpus: dict[str, list[float]] = {kind: [] for kind in actions}
    deltas: dict[str, dict[str, float]] = {kind: {} for kind in actions}
    kinds = list(actions)
    for w in range(rounds + 1):
        for kind in kinds if w % 2 else kinds[::-1]:
            action = actions[kind]
            before = await meter.snapshot() if meter else {}
            cpu = time.process_time()
            this = []
            for _ in range(count):
                started = time.perf_counter_ns()
                await action()
                this.append(time.perf_counter_ns() - started)
            await settle()
            used = time.process_time() - cpu
            delta = meter.delta(before, await meter.snapshot()) if meter else {}
            if w:
                walls[kind] += this
                cpus[kind].append(1e6 * used / count)
                for key, value in delta.items():
                    deltas[kind][key] = deltas[kind].get(key, 0.0) + value
    out: dict[str, float] = {}
    for kind in kinds:
        out.update(spread(kind, walls[kind]))
        out[f"{kind}.cpu_us"] = statistics.median(cpus[kind])
        if meter is not None:
            out.update(per_op(kind, deltas[kind], count * rounds))
    return out


async def memory_used(meter: Meter | None) -> int:
    """Redis's ``used_memory``; in-process, this process's traced memory (collected first)."""
    if meter is not None:
        return int((await meter.client.info("memory"))["used_memory"])
    gc.collect()
    return int(tracemalloc.get_traced_memory()[0])


async def part_history(plan: RoomsPlan, url: str | None) -> dict[str, float]:
    """What keeping a room's messages costs: stored publishes against plain ones, memory per
    stored message and per room, and recoveries."""
    from trioweb.broadcast import Broadcast
    from trioweb.rooms import Rooms

    hub = Broadcast(url)
    # The publishes, in a room whose history is full (the default 1,000): each stored
    # message trims the oldest, as in a busy room.
    busy = Rooms(hub, prefix="bs", presence_ttl=NEVER, lease_ttl=NEVER, max_buffer=100_000)
    # The memory and the recoveries, in rooms whose history keeps everything stored.
    keep = max(plan.history_messages, *plan.history_recover)
    kept = Rooms(hub, prefix="bk", presence_ttl=NEVER, lease_ttl=NEVER, history=keep)
    out: dict[str, float] = {}
    async with running(url, busy, kept) as (hub, meter), trio.open_nursery() as nursery:
        settle = Settler(hub)
        async with settle.open():
            await calibrate(meter, settle)
            windows = Windows(meter, settle)

            # A stored publish against a plain one, to a room with one member.
            member = await nursery.start(drained_member, busy, "hall", "reader")
            room = member.room
            for _ in range(busy.history + 20):
                await room.history.append(STORED)
            await settle()

            def bump(state: dict[str, Any]) -> dict[str, Any]:
                return {"n": state.get("n", 0) + 1}

            def said(state: dict[str, Any]) -> dict[str, Any]:
                return {"type": "count", "n": state["n"], "text": "x" * 62}

            update = partial(room.state.update, bump, announce=said)
            out |= await alternating(
                windows,
                {
                    "history.publish": partial(room.publish, STORED),
                    "history.append": partial(room.history.append, STORED),
                    "history.update": update,
                    "history.update_stored": partial(update, history=True),
                },
                plan.history_publishes,
                plan.history_windows,
            )

            # Recoveries of N messages, alone and in a join with since (against a plain join).
            anchor = await nursery.start(hold, partial(kept.join, "replay", user="anchor"))
            replay = anchor.value.room
            offsets = [await replay.history.append(STORED) for _ in range(keep)]
            await settle()
            for n in plan.history_recover:
                since = offsets[-n - 1]
                recovery = await replay.history.recover(since)
                if not recovery.exact or len(recovery.messages) != n:
                    raise RuntimeError(f"recovering {n} messages gave {len(recovery.messages)}")
                out |= await alternating(
                    windows,
                    {f"recover.{n}": partial(replay.history.recover, since)},
                    max(1, plan.history_recoveries // 4),
                    4,
                )
                joined = await enter_all(
                    nursery,
                    [
                        partial(kept.join, "replay", user=f"back{i}", since=since)
                        for i in range(plan.history_recoveries)
                    ],
                )
                await leave_all(joined)
                out.update(spread(f"join_since.{n}", [h.enter_ns for h in joined]))
            plain = await enter_all(
                nursery,
                [
                    partial(kept.join, "replay", user=f"new{i}")
                    for i in range(plan.history_recoveries)
                ],
            )
            await leave_all(plain)
            out.update(spread("join_plain", [h.enter_ns for h in plain]))
            await leave_all([anchor])

            # Memory: many messages stored in one room, then one message in each of many rooms.
            if meter is None:
                tracemalloc.start()
            store = await nursery.start(drained_member, kept, "store", "reader")
            await store.room.history.append(STORED)  # the room's history exists
            await settle()
            before = await memory_used(meter)
            for _ in range(plan.history_messages - 1):
                await store.room.history.append(STORED)
            await settle()
            per_message = (await memory_used(meter) - before) / (plan.history_messages - 1)
            members = [
                await nursery.start(drained_member, kept, f"room{i}", "reader")
                for i in range(plan.history_rooms)
            ]
            await settle()
            before = await memory_used(meter)
            for each in members:
                await each.room.history.append(STORED)
            await settle()
            per_room = (await memory_used(meter) - before) / plan.history_rooms
            out["history.memory.message_b"] = per_message
            out["history.memory.room_b"] = per_room - per_message
            out["history.memory.messages"] = plan.history_messages
            out["history.memory.rooms"] = plan.history_rooms
            if meter is None:
                tracemalloc.stop()
            nursery.cancel_scope.cancel()
    return out


PART_FUNCTIONS = {
    "joins": part_joins,
    "heartbeat": part_heartbeat,
    "memory": part_memory,
    "presence": part_presence,
    "fanout": part_fanout,
    "history": part_history,
}


def child_main(argv: list[str]) -> None:
    """``python -m benchmarks.rooms PART STORE PLAN [URL]``: one line of JSON."""
    part, store, plan_name = argv[:3]
    url = argv[3] if store == "redis" else None
    if part == "memory":
        tracemalloc.start()
    from .server import use_tree

    use_tree()
    values = trio.run(PART_FUNCTIONS[part], ROOMS_PLANS[plan_name], url)
    print(json.dumps(values), flush=True)


# -- the harness ---------------------------------------------------------------------------


class RedisServer:
    """A redis-server of our own on a unix socket in a temporary directory (no TCP port)."""

    def __init__(self, executable: str) -> None:
        # A short path: unix socket paths are limited to about 100 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="trioweb-rooms-"))
        self.socket = self.directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.log = (self.directory / "redis.log").open("w")
        self.proc = subprocess.Popen(
            [
                executable,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start (its log: {self.directory})")
            time.sleep(0.02)
        self.pid = self.proc.pid
        self.version = (
            subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10)
            .stdout.split()[2]
            .removeprefix("v=")
        )

    def stop(self) -> None:
        """Stop the server (bounded) and remove its directory."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def run_part(
    part: str,
    store: str,
    plan: RoomsPlan,
    url: str | None,
    log: Path,
    cpus: set[int] | None,
    timeout: float = 600,
) -> dict[str, float]:
    """One part in a process of its own; its JSON line."""
    from .runner import PYTHON, ROOT, HarnessError, pin

    argv = [PYTHON, "-m", "benchmarks.rooms", part, store, plan.name] + ([url] if url else [])
    with log.open("w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        pin(proc.pid, cpus)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise HarnessError(f"{part} ({store}) took more than {timeout:g} s") from None
    if proc.returncode != 0 or not stdout.strip():
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise HarnessError(f"{part} ({store}) failed: {tail[0]} (see {log})")
    return json.loads(stdout.strip().splitlines()[-1])


def commit() -> str:
    """The commit measured (``+`` if the tree had changes)."""
    from .runner import ROOT

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+" if dirty else "")


def rooms_run(plan: RoomsPlan, pin_cpus: bool, logs: Path) -> dict[str, Any]:
    """Every round, every part with every store, in a rotated order."""
    from .runner import HarnessError, Progress, machine, pin, rotate

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    bench_cpus = redis_cpus = None
    if pin_cpus and len(cpus) >= 2:
        bench_cpus, redis_cpus = {cpus[-1]}, set(cpus[:-1])
    logs.mkdir(parents=True, exist_ok=True)
    executable = shutil.which("redis-server")
    skipped = [] if executable else ["redis"]
    jobs = [(part, store) for part, stores in PARTS.items() for store in stores]
    jobs = [(part, store) for part, store in jobs if store not in skipped]
    raw: dict[str, list[dict[str, float]]] = {"memory": [], "redis": []}
    failures: list[str] = []
    progress = Progress(plan.rounds * len(jobs))
    redis = RedisServer(executable) if executable else None
    try:
        if redis is not None:
            pin(redis.pid, redis_cpus)
        for round_no in range(plan.rounds):
            values: dict[str, dict[str, float]] = {"memory": {}, "redis": {}}
            for job in rotate([f"{part} {store}" for part, store in jobs], round_no):
                part, store = job.split()
                label = f"round {round_no + 1}/{plan.rounds} · {part}, {store} store"
                progress.show(label)
                log = logs / f"rooms-{part}-{store}-round{round_no + 1}.log"
                url = redis.url if redis is not None and store == "redis" else None
                try:
                    values[store].update(run_part(part, store, plan, url, log, bench_cpus))
                except (HarnessError, OSError, ValueError) as exc:
                    failures.append(f"round {round_no + 1}, {part} ({store}): {exc}")
                    progress.step(label, f"FAILED ({exc})")
                    continue
                progress.step(label, "done")
            for store, got in values.items():
                if got:
                    raw[store].append(got)
    finally:
        if redis is not None:
            redis.stop()
    for rounds in raw.values():
        # A command an operation ran in one round but not in another counts as 0 there.
        counted = {key for values in rounds for key in values if ".cmd." in key}
        for values in rounds:
            for key in counted:
                values.setdefault(key, 0.0)
    info = machine()
    info["versions"]["redis-server"] = redis.version if redis is not None else "not installed"
    with contextlib.suppress(Exception):
        from importlib import metadata

        info["versions"]["coredis"] = metadata.version("coredis")
    return {
        "plan": asdict(plan),
        "stores": [store for store in ("memory", "redis") if raw[store]],
        "pinning": {
            "bench": sorted(bench_cpus) if bench_cpus else None,
            "redis": sorted(redis_cpus) if redis_cpus else None,
        },
        "machine": info,
        "commit": commit(),
        "ttls": {"presence": HEARTBEAT_TTL, "lease": RENEW_TTL},
        "rounds": raw,
        "skipped": skipped,
        "failures": failures,
        "seconds": time.monotonic() - progress.start,
    }


def rooms_main(args: Any, plan_name: str, out: Path, docs: bool) -> int:
    """``--rooms``: run the rooms benchmark, write its report (and its docs section)."""
    from . import report
    from .runner import ROOT, medians

    plan = ROOMS_PLANS[plan_name]
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    print(f"benchmarks: rooms, {plan.name} plan, {plan.rounds} round(s)", file=sys.stderr)
    results = rooms_run(plan, not args.no_pin, out / "logs")
    results["medians"] = medians(results["rounds"])
    results["command"] = " ".join(
        ["python -m benchmarks --rooms"]
        + ([f"--{plan.name}"] if plan.name != "full" else [])
        + ([f"--rounds {args.rounds}"] if args.rounds else [])
    )
    (out / "rooms.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = report.rooms_table(results)
    (out / "rooms.md").write_text(table + "\n")
    print(table)
    written = [out / "rooms.json", out / "rooms.md"]
    if docs:
        written += report.update_rooms_docs(results, ROOT / "docs")
    if results["skipped"]:
        print("warning: redis-server is not installed: no Redis figures", file=sys.stderr)
    for failure in results["failures"]:
        print(f"warning: {failure}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    child_main(sys.argv[1:])
