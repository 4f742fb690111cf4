"""Soak tests: trioweb under churn, shutdown, a stalled reader and a broker outage, for real.

Every test serves an app with ``trioweb.serve`` on a free loopback port and drives it with real
clients: trio-websocket, or raw TCP sockets that do the handshake by hand and then misbehave.
Every loop is bounded in count, every test in time (``trio.fail_after``). Nothing waits with a
sleep: quiescence is ``trio.testing.wait_all_tasks_blocked``, which, with real sockets in play,
returns only once no task is runnable and no socket has anything ready; progress is messages
received. Each test prints the figures it measured (``pytest -s`` shows them).
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import logging
import os
import resource
import socket
import struct
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import helpers
import pytest
import trio
import trio.testing
import trio_websocket
from helpers import HOST, Server
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import TCPServer
from trio_websocket import ConnectionClosed

import trioweb
from trioweb._connection import Connection
from trioweb.broadcast import Broadcast, Gap

#: Quiet time that counts as "the process is idle": loopback TCP settles well within it.
IDLE = 0.05
#: The loggers whose records a test inspects.
LOGGERS = ("trioweb", "hypercorn.error")
#: The time limit of each test's body (its server already up), in seconds.
TEST_TIMEOUT = 20
#: How long the server may take to stop once the body is done (or has failed).
STOP_TIMEOUT = 10


# -- a real server -----------------------------------------------------------------------------


@asynccontextmanager
async def serving(app: trioweb.App, **options: Any) -> AsyncIterator[Server]:
    """``helpers.serving`` for soak runs (serve()'s own drain time unless given).

    The block gets ``TEST_TIMEOUT`` seconds; when it ends, or fails, the server is stopped
    through its shutdown trigger, not cancelled, and has ``STOP_TIMEOUT`` more to return.
    """
    options.setdefault("graceful_timeout", 10.0)
    with trio.fail_after(TEST_TIMEOUT + STOP_TIMEOUT):
        async with helpers.serving(app, **options) as server:
            try:
                with trio.fail_after(TEST_TIMEOUT):
                    yield server
            except Exception:
                # A failed test stops the server as SIGTERM would, instead of letting the
                # failure cancel it, so that the failure is reported on its own.
                server.stop.set()
                await server.stopped.wait()
                raise


def connect(server: Server, path: str, **options: Any) -> Any:
    """A trio-websocket client for ``path`` (an async context manager)."""
    options.setdefault("connect_timeout", 5)
    options.setdefault("disconnect_timeout", 5)
    return trio_websocket.open_websocket_url(server.url(path), **options)


def capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.WARNING, logger=name)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records from our loggers with a traceback or at ERROR and above: there must be none."""
    return [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith(LOGGERS) and (r.exc_info or r.levelno >= logging.ERROR)
    ]


# -- raw clients: the handshake by hand, then whatever misbehaviour a test wants ---------------


async def raw_handshake(stream: trio.SocketStream, port: int, path: str) -> bytes:
    """Do the WebSocket handshake by hand on ``stream``; return what followed the response."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        assert chunk, f"the server hung up during the handshake: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.decode("latin-1").split("\r\n")
    assert status.startswith("HTTP/1.1 101"), head
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    magic = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    expected = base64.b64encode(hashlib.sha1((key + magic).encode()).digest()).decode()
    assert headers["sec-websocket-accept"] == expected
    return rest


def partial_text_frame(length: int, sent: int) -> bytes:
    """The first ``sent`` payload bytes of a masked text frame announcing ``length`` bytes."""
    assert 126 <= length < 2**16 and sent < length
    mask = os.urandom(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"x" * sent))
    return bytes([0x81, 0x80 | 126]) + struct.pack("!H", length) + mask + payload


async def reset(stream: trio.SocketStream) -> None:
    """Abort the connection: SO_LINGER 0, then close, sends a TCP RST instead of a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


class FrameReader:
    """Reads the server's (unmasked) frames from a raw stream."""

    def __init__(self, stream: trio.SocketStream, already: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(already)

    async def _need(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = await self.stream.receive_some(1 << 16)
            assert chunk, "the server hung up"
            self.buffer += chunk

    async def read(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload); every frame must be a whole message."""
        await self._need(2)
        first, second = self.buffer[0], self.buffer[1]
        assert first & 0x80, "a fragmented message"
        length, offset = second & 0x7F, 2
        if length == 126:
            await self._need(4)
            (length,), offset = struct.unpack("!H", self.buffer[2:4]), 4
        elif length == 127:
            await self._need(10)
            (length,), offset = struct.unpack("!Q", self.buffer[2:10]), 10
        await self._need(offset + length)
        payload = bytes(self.buffer[offset : offset + length])
        del self.buffer[: offset + length]
        return first & 0x0F, payload


# -- what the process holds ----------------------------------------------------------------------


def living_tasks() -> Counter[str]:
    """Every living trio task, by name: the task tree walked from the root."""
    names: Counter[str] = Counter()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    todo = [root]
    while todo:
        task = todo.pop()
        names[task.name] += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return names


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def live_objects() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


#: What one connection is made of, server side and client side.
CONNECTION_PARTS = (
    Connection,
    trioweb.WebSocket,
    WSStream,
    TCPServer,
    trio.SocketStream,
    trio_websocket.WebSocketConnection,
)


def connection_parts() -> Counter[str]:
    """The living objects that make up connections, by type: none may outlive its socket."""
    return Counter(
        type(o).__qualname__ for o in gc.get_objects() if isinstance(o, CONNECTION_PARTS)
    )


async def quiesce() -> None:
    """Wait until the whole process is idle (every task blocked, no socket ready), then collect
    garbage so that what remains is what is really held."""
    await trio.testing.wait_all_tasks_blocked(cushion=IDLE)
    # trio leaves the entry of every cancel scope with a deadline in its timer heap when the
    # scope exits, and prunes them in batches, once there are a thousand stale ones: up to ~4000
    # pymalloc blocks that come and go with the timing. Prune them now, so that they never
    # count as growth. (A private call: if trio renames it, this fails loudly.)
    trio._core._run.GLOBAL_RUN_CONTEXT.runner.deadlines._prune()
    gc.collect()


# -- 1. churn: thousands of client lives, some of them cut short -------------------------------

CHURN_CYCLES = 2000
CHURN_CONCURRENCY = 50
WARMUP_CYCLES = 200
#: Of every ten cycles: a raw client reset mid-frame on /echo, another on /produce, two
#: trio-websocket clients on /produce, and six on /echo.
ABRUPT_ECHO, ABRUPT_PRODUCE, PRODUCE = 0, 1, (2, 3)
#: Memory, measured with cheap counters (tracemalloc slows this churn down 3.6 times), after a
#: full collection, every task idle, and trio's timer heap pruned (see ``quiesce``):
#:
#: - the objects a connection is made of (trioweb's Connection and WebSocket, hypercorn's
#:   TCPServer and WSStream, the socket streams, trio-websocket's client): none may survive;
#: - live pymalloc blocks (``sys.getallocatedblocks()``): fewer than one per cycle, so a leak of
#:   one small object per cycle fails. An open connection holds ~413 blocks (client and server
#:   together; a leaked Connection with its WebSocket alone ~55). Observed: +240 to +430, the
#:   same after 1000 or 4000 cycles (caches filled once), so not a slow leak either;
#: - peak RSS: the warm-up already reached the peak concurrency, so the peak may only creep.
#:   2000 connections left behind would add ~50 MiB (~25 KiB each, see docs/performance.md
#:   on what a connection costs); 8 MiB is a sixth of that. Observed: +0.1 to +2 MiB.
CHURN_BLOCKS_BOUND = CHURN_CYCLES
CHURN_MAXRSS_BOUND_KIB = 8 * 1024
#: File descriptors the churn may leave open: none should stay; the slack covers lazily opened
#: process-wide files (none were seen).
FD_SLACK = 3


@dataclass
class ChurnStats:
    after_hooks: int = 0
    close_codes: Counter[int | None] = field(default_factory=Counter)
    producers_started: int = 0
    producers_ended: int = 0


def churn_app(stats: ChurnStats) -> trioweb.App:
    app = trioweb.App()

    @app.websocket("/echo")
    async def echo(ws: trioweb.WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)

    @app.websocket("/produce")
    async def produce(ws: trioweb.WebSocket, nursery: trio.Nursery) -> None:
        await ws.accept()

        async def producer() -> None:
            stats.producers_started += 1
            try:
                for n in range(1_000_000):
                    await ws.send(f"tick {n}")
                    await trio.sleep(0.002)  # the producer's own pacing
            finally:
                stats.producers_ended += 1

        nursery.start_soon(producer)
        # The handler returns: the connection lives on as long as its producer does.

    @app.after_websocket
    async def count(ws: trioweb.WebSocket) -> None:
        stats.after_hooks += 1
        stats.close_codes[ws.close_code] += 1

    return app


async def churn_cycle(server: Server, n: int) -> None:
    kind = n % 10
    if kind in (ABRUPT_ECHO, ABRUPT_PRODUCE):
        path = "/echo" if kind == ABRUPT_ECHO else "/produce"
        stream = await trio.open_tcp_stream(HOST, server.port)
        early = await raw_handshake(stream, server.port, path)
        if kind == ABRUPT_PRODUCE:
            assert early or await stream.receive_some(4096)  # the producer is sending
        # Half a frame: the server is in the middle of a message when the RST comes.
        await stream.send_all(partial_text_frame(1000, 100 + n % 400))
        await reset(stream)
    elif kind in PRODUCE:
        async with connect(server, "/produce") as ws:
            for expected in range(3):
                assert await ws.get_message() == f"tick {expected}"
    else:
        async with connect(server, "/echo") as ws:
            for i in range(3):
                await ws.send_message(f"{n}.{i}")
                assert await ws.get_message() == f"{n}.{i}"


async def churn(server: Server, cycles: int) -> None:
    """Live ``cycles`` client lives, ``CHURN_CONCURRENCY`` at a time."""
    numbers = iter(range(cycles))

    async def worker() -> None:
        for n in numbers:  # shared: each number is taken by one worker
            await churn_cycle(server, n)

    async with trio.open_nursery() as nursery:
        for _ in range(CHURN_CONCURRENCY):
            nursery.start_soon(worker)


async def test_churn_leaves_no_tasks_connections_fds_or_memory_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_warnings(caplog)
    stats = ChurnStats()
    app = churn_app(stats)
    async with serving(app) as server:
        # Warm up first: imports, caches and the allocator's arenas are not leaks.
        await churn(server, WARMUP_CYCLES)
        await quiesce()
        assert len(app.connections) == 0
        # Counted, not asserted empty: trio's accept loop keeps its last accepted (closed)
        # stream in a local, and earlier tests in the session may hold objects of their own.
        parts_before = connection_parts()
        tasks_before, fds_before = living_tasks(), open_fds()
        objects_before = live_objects()
        blocks_before, rss_before = sys.getallocatedblocks(), maxrss_kib()

        started = trio.current_time()
        await churn(server, CHURN_CYCLES)
        churn_time = trio.current_time() - started
        await quiesce()

        blocks_after, rss_after = sys.getallocatedblocks(), maxrss_kib()
        tasks_after, fds_after = living_tasks(), open_fds()
        grown = (live_objects() - objects_before).most_common(10)
        parts_left = connection_parts()
        live_connections = len(app.connections)

    print(
        f"\nchurn: {CHURN_CYCLES} cycles in {churn_time:.2f} s; "
        f"tasks {tasks_before.total()} -> {tasks_after.total()}; fds {fds_before} -> {fds_after};"
        f" pymalloc blocks {blocks_before} -> {blocks_after} ({blocks_after - blocks_before:+});"
        f" maxrss {rss_before} -> {rss_after} KiB; after_websocket close codes"
        f" {dict(stats.close_codes)}; most grown object types {grown}"
    )
    assert live_connections == 0
    assert parts_left == parts_before  # not one connection's objects survived it
    assert tasks_after == tasks_before, (tasks_after - tasks_before, tasks_before - tasks_after)
    assert fds_after <= fds_before + FD_SLACK
    assert blocks_after - blocks_before < CHURN_BLOCKS_BOUND, grown
    assert rss_after - rss_before < CHURN_MAXRSS_BOUND_KIB, grown
    total = WARMUP_CYCLES + CHURN_CYCLES
    assert stats.after_hooks == total  # every handshake ran its connection to the end
    assert stats.close_codes[1011] == 0
    assert stats.producers_started == stats.producers_ended == total * 3 // 10
    assert tracebacks(caplog) == []


# -- 2. shutdown with hundreds of sockets open, some of them mid-send --------------------------

SHUTDOWN_SOCKETS = 300
SHUTDOWN_STREAMING = 100  # of them: every third one
DRAIN_TIMEOUT = 5.0
STREAM_PAYLOAD = "x" * 16384


async def test_shutdown_closes_hundreds_of_sockets_with_1001_within_the_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 4 * SHUTDOWN_SOCKETS  # both ends
    capture_warnings(caplog)
    app = trioweb.App()
    go = trio.Event()  # the streaming handlers start together, once every socket is open
    in_send = [0]  # streaming handlers inside ws.send() right now
    after_hook_codes: list[int | None] = []

    @app.websocket("/idle")
    async def idle(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        await ws.send("ready")
        await trio.sleep_forever()

    @app.websocket("/stream")
    async def stream(ws: trioweb.WebSocket) -> None:
        await ws.accept()
        await ws.send("ready")
        await go.wait()
        for n in range(10_000_000):  # as fast as the client reads: no pacing
            in_send[0] += 1
            try:
                await ws.send(f"{n} {STREAM_PAYLOAD}")
            finally:
                in_send[0] -= 1

    @app.after_websocket
    async def record(ws: trioweb.WebSocket) -> None:
        after_hook_codes.append(ws.close_code)

    closes: list[tuple[int, str | None, float]] = []
    streaming_clients = 0
    all_streaming = trio.Event()
    received_after_go = 0

    async def client(path: str, task_status: trio.TaskStatus[None]) -> None:
        nonlocal streaming_clients, received_after_go
        async with connect(server, path) as ws:
            assert await ws.get_message() == "ready"
            task_status.started()
            seen = 0
            try:
                while True:
                    message = await ws.get_message()
                    assert message.startswith(f"{seen} "), message[:20]
                    seen += 1
                    received_after_go += 1
                    if seen == 3:  # this one is streaming at full speed
                        streaming_clients += 1
                        if streaming_clients == SHUTDOWN_STREAMING:
                            all_streaming.set()
            except ConnectionClosed as closed:
                assert closed.reason is not None
                closes.append((closed.reason.code, closed.reason.reason, trio.current_time()))

    async with serving(app, graceful_timeout=DRAIN_TIMEOUT) as server:
        async with trio.open_nursery() as clients:
            opened = trio.current_time()
            for i in range(SHUTDOWN_SOCKETS):
                path = "/stream" if i % 3 == 0 else "/idle"
                await clients.start(client, path)
            open_time = trio.current_time() - opened
            assert len(app.connections) == SHUTDOWN_SOCKETS
            go.set()
            await all_streaming.wait()
            fds_open = open_fds()
            sending_at_trigger = in_send[0]
            # SIGTERM, as serve() sees it (tests/test_cli.py sends the real signal).
            shutdown_at = trio.current_time()
            server.stop.set()
        clients_done = trio.current_time() - shutdown_at
        await server.stopped.wait()
        serve_returned = trio.current_time() - shutdown_at

    last_close = max(at for *_, at in closes) - shutdown_at
    print(
        f"\nshutdown: {SHUTDOWN_SOCKETS} sockets opened in {open_time:.2f} s ({fds_open} fds);"
        f" {SHUTDOWN_STREAMING} streaming ({sending_at_trigger} inside ws.send() at the trigger),"
        f" {received_after_go} stream messages received;"
        f" last close frame {last_close:.2f} s after the trigger, clients done in"
        f" {clients_done:.2f} s, serve() returned in {serve_returned:.2f} s"
    )
    assert Counter((code, reason) for code, reason, _ in closes) == {
        (1001, "server shutting down"): SHUTDOWN_SOCKETS
    }
    assert sending_at_trigger > 0  # the shutdown did catch handlers mid-send
    assert last_close < DRAIN_TIMEOUT
    assert serve_returned < DRAIN_TIMEOUT
    assert after_hook_codes == [1001] * SHUTDOWN_SOCKETS
    assert len(app.connections) == 0
    assert tracebacks(caplog) == []
    # Nothing overran the drain either (that would be a warning, not a traceback).
    assert [r.getMessage() for r in caplog.records if r.name.startswith(LOGGERS)] == []


# -- 3. a reader that stops reading ------------------------------------------------------------

FLOOD_PAYLOAD = 16384
#: The slow client's receive buffer (the kernel doubles it). Fixed, so that loopback's autotuning
#: (tcp_rmem goes up to 32 MiB here) does not hide the stall behind a huge buffer.
SLOW_RCVBUF = 64 * 1024
ROUND_TRIPS = 200
#: Traced memory (tracemalloc) the process may gain while the stalled producer keeps trying and
#: two other clients do their work (their objects are gone by the measurement). What bounds it:
#: trioweb never buffers outbound messages (``ws.send`` is hypercorn's send, under a lock), and
#: hypercorn's send returns only once the kernel has taken the bytes (docs/hypercorn.md,
#: fact 5). So a producer facing a peer that reads nothing holds one message, blocked in its
#: send, and the rest sits in the kernel's socket buffers (server send buffer, client receive
#: buffer), which the kernel bounds. Had trioweb queued outbound messages instead, the flood
#: would add 16 KiB per turn of its loop: a single MiB is 64 messages' worth. Observed: ~20 KiB.
STALL_MEMORY_BOUND = 1024 * 1024


def kernel_buffer_max(name: str) -> int:
    """The largest a TCP socket buffer may autotune to: the third of net.ipv4.tcp_{w,r}mem."""
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return int(f.read().split()[2])


async def test_a_stalled_reader_pins_only_its_own_producer_and_memory_stays_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_warnings(caplog)
    app = trioweb.App()
    sent: Counter[str] = Counter()  # messages whose send() has returned, per client name
    ended: dict[str, trio.Event] = {}

    @app.websocket("/flood/{name}")
    async def flood(ws: trioweb.WebSocket, name: str) -> None:
        ended[name] = trio.Event()
        try:
            await ws.accept()
            for n in range(10_000_000):  # as fast as it can: no pacing
                await ws.send(f"{n:09d}".encode() + bytes(FLOOD_PAYLOAD))
                sent[name] += 1
        finally:
            ended[name].set()

    @app.websocket("/echo")
    async def echo(ws: trioweb.WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)

    async with serving(app) as server:
        # The slow client: a raw socket with a small fixed receive buffer, that reads
        # nothing after the handshake.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
        await sock.connect((HOST, server.port))
        slow = trio.SocketStream(sock)
        early = await raw_handshake(slow, server.port, "/flood/slow")
        # Every task blocked: the producer, which never sleeps, is stuck in its send.
        # (If sends to a stalled peer returned, the producer would spin and this would
        # never return: fail_after ends the test.)
        await quiesce()
        stalled_at = sent["slow"]
        tracemalloc.start()
        try:
            async with trio.open_nursery() as nursery:
                fast_messages = 0

                async def fast_flood_reader() -> None:
                    nonlocal fast_messages
                    async with connect(server, "/flood/fast") as ws:
                        for n in range(ROUND_TRIPS):
                            assert (await ws.get_message())[:9] == f"{n:09d}".encode()
                            fast_messages += 1

                nursery.start_soon(fast_flood_reader)
                started = trio.current_time()
                async with connect(server, "/echo") as ws:
                    for i in range(ROUND_TRIPS):
                        await ws.send_message(f"ping {i}")
                        assert await ws.get_message() == f"ping {i}"
                round_trips_time = trio.current_time() - started
            with trio.fail_after(2):
                await ended["fast"].wait()
            await quiesce()
            growth, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        still_stalled_at = sent["slow"]

        # The slow client reads again: the stream resumes where it was, nothing lost.
        frames = FrameReader(slow, early)
        resume_to = still_stalled_at + 20
        for n in range(resume_to):
            opcode, payload = await frames.read()
            assert (opcode, payload[:9]) == (2, f"{n:09d}".encode())
        await reset(slow)
        with trio.fail_after(2):
            await ended["slow"].wait()
        await quiesce()
        live_connections = len(app.connections)

    in_kernel = stalled_at * (FLOOD_PAYLOAD + 9)
    kernel_room = kernel_buffer_max("tcp_wmem") + 2 * SLOW_RCVBUF
    print(
        f"\nslow reader: stalled after {stalled_at} messages ({in_kernel / 2**20:.2f} MiB in"
        f" kernel buffers, room for {kernel_room / 2**20:.2f} MiB); {still_stalled_at} after"
        f" {ROUND_TRIPS} echo round trips and {fast_messages} fast flood messages in"
        f" {round_trips_time:.2f} s; traced growth {growth / 1024:.1f} KiB (peak"
        f" {peak / 1024:.1f} KiB); resumed and read {resume_to} messages in order"
    )
    assert fast_messages == ROUND_TRIPS
    # Back-pressure, not buffering: the stalled producer got nowhere while the others ran...
    assert still_stalled_at == stalled_at
    # ...and what it did send fits in the kernel's buffers, which are what bound it.
    assert in_kernel <= kernel_room + FLOOD_PAYLOAD
    assert growth < STALL_MEMORY_BOUND
    assert live_connections == 0
    assert tracebacks(caplog) == []


# -- 4. the Redis backend through a broker crash -------------------------------------------------

#: Messages each subscriber must see before the crash, and again after the gap.
WANT = 20
#: Publishes that must have failed (messages lost for sure) before the broker comes back.
LOSSES = 3


async def test_subscribers_see_a_gap_across_a_broker_restart_and_then_new_messages(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture_warnings(caplog)
    caplog.set_level(logging.WARNING, logger="trioweb.broadcast")
    hub = Broadcast(redis_server.url)
    app = trioweb.App()
    app.use(hub)
    after_hook_codes: list[int | None] = []
    published: list[int] = []
    lost: list[int] = []
    enough_lost = trio.Event()

    async def publisher() -> None:
        for n in range(1_000_000):
            if await hub.publish("ticks", {"n": n}):  # False, never an error, in an outage
                published.append(n)
            else:
                lost.append(n)
                if len(lost) == LOSSES:
                    enough_lost.set()
            await trio.sleep(0.01)  # a steady broadcast, paced by the app

    @app.on_startup
    async def start_publisher() -> None:
        app.nursery.start_soon(publisher)

    @app.websocket("/ticks")
    async def ticks(ws: trioweb.WebSocket, nursery: trio.Nursery) -> None:
        async def on_gap(gap: Gap) -> None:
            await ws.send_json({"gap": gap.reason})

        async with ws, hub.subscribe("ticks", max_buffer=1000) as sub:
            await ws.send_json({"joined": True})
            nursery.start_soon(partial(sub.forward_to, ws, on_gap=on_gap))
            async for _ in ws:
                pass

    @app.after_websocket
    async def record(ws: trioweb.WebSocket) -> None:
        after_hook_codes.append(ws.close_code)

    streams: list[list[Any]] = [[], []]
    before = [trio.Event(), trio.Event()]
    after = [trio.Event(), trio.Event()]
    readers: list[trio.CancelScope] = []

    async def subscriber(i: int, task_status: trio.TaskStatus[None]) -> None:
        async with connect(server, "/ticks") as ws:
            assert json.loads(await ws.get_message()) == {"joined": True}
            items = streams[i]
            with trio.CancelScope() as reading:
                readers.append(reading)
                task_status.started()
                while True:
                    # A close (1011 for a crashed handler) raises ConnectionClosed: the test
                    # fails right here.
                    items.append(json.loads(await ws.get_message()))
                    gaps = [k for k, item in enumerate(items) if "gap" in item]
                    if not gaps and len(items) >= WANT:
                        before[i].set()
                    if gaps and len(items) - gaps[-1] - 1 >= WANT:
                        after[i].set()
            # Leaving the block closes the client cleanly.

    async with serving(app) as server:
        async with trio.open_nursery() as nursery:
            for i in range(2):
                await nursery.start(subscriber, i)
            for event in before:
                await event.wait()
            crash_at = trio.current_time()
            redis_server.stop()  # a kill -9, mid-broadcast
            await enough_lost.wait()
            await trio.to_thread.run_sync(redis_server.start)
            restarted_at = trio.current_time()
            for event in after:
                await event.wait()
            recovered_at = trio.current_time()
            for scope in readers:
                scope.cancel()

    print(
        f"\nbroker restart: restarted {restarted_at - crash_at:.2f} s after the kill,"
        f" messages again {recovered_at - restarted_at:.2f} s later; {len(published)} published,"
        f" {len(lost)} lost ({lost[:3]}...); streams: "
        + "; ".join(
            f"{len(s)} items, gaps at {[k for k, x in enumerate(s) if 'gap' in x]}" for s in streams
        )
        + f"; warnings logged: {Counter(r.getMessage()[:40] for r in caplog.records)}"
    )
    for items in streams:
        assert all(set(item) in ({"n"}, {"gap"}) for item in items), items
        gaps = [k for k, item in enumerate(items) if "gap" in item]
        assert len(gaps) >= 1, items
        numbers_before = [item["n"] for item in items[: gaps[0]]]
        numbers_after = [item["n"] for item in items[gaps[-1] + 1 :]]
        # In order and without a hole while the broker is up, on each side of the gap...
        assert numbers_before == list(range(numbers_before[0], numbers_before[-1] + 1))
        assert numbers_after == list(range(numbers_after[0], numbers_after[-1] + 1))
        assert len(numbers_after) >= WANT
        # ...and across it, the messages published during the outage are missing.
        assert numbers_after[0] > numbers_before[-1] + 1
        assert set(lost) & set(range(numbers_before[-1] + 1, numbers_after[0]))
    assert 1011 not in after_hook_codes
    assert len(after_hook_codes) == 2
    assert tracebacks(caplog) == []
