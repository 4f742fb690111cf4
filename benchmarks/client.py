"""The load generator: ``python -m benchmarks.client SPEC_JSON``, one process of it or several.

It runs on asyncio (uvloop when installed) with picows, a WebSocket client whose frame parsing,
masking and sending are compiled (Cython), so that a Python server saturates long before the
client does. Without picows it falls back to wsproto over asyncio protocols: correct, but much
slower, which the report flags (the client's CPU time stands next to the server's).

The harness talks to each client process in lines:

1. the client opens its sockets and prints ``ready``;
2. the harness writes ``go T0 T1`` (``time.monotonic()`` seconds, a clock all processes on the
   machine share): load starts now, and only what happens between T0 and T1 is counted;
   ``hold`` clients get ``go`` and close their sockets;
3. the client prints one line of JSON with what it measured, and exits.

Between T0 and T1 each client also reads its own CPU time and the server's (``/proc``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

#: BENCH_CLIENT=fallback forces the slow path (wsproto, plain asyncio), to test it.
FALLBACK = os.environ.get("BENCH_CLIENT") == "fallback"

try:
    if FALLBACK:
        raise ImportError("the fallback client was asked for")
    import picows
except ImportError:  # the fallback keeps the harness (and its CI test) working without it
    picows = None

#: Which WebSocket client this process uses.
BACKEND = "picows" if picows is not None else "wsproto"

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid``'s main thread, where the server's event loop runs.

    ``/proc/PID/schedstat`` counts nanoseconds; ``/proc/PID/stat`` (the fallback) counts
    clock ticks, too coarse for short windows.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- connections: one small interface over picows or wsproto -------------------------------


class Handler:
    """What a scenario does with one socket. ``conn`` has ``send(bytes)`` and ``close()``."""

    def opened(self, conn: Any) -> None:
        pass

    def message(self, conn: Any, data: bytes) -> None:
        pass

    def closed(self, conn: Any) -> None:
        pass


if picows is not None:
    from picows import WSCloseCode, WSListener, WSMsgType

    class PicowsConn(WSListener):  # type: ignore[misc]
        """A picows listener that hands frames to a :class:`Handler`."""

        def __init__(self, handler: Handler, payload: bool) -> None:
            self.handler = handler
            self.payload = payload
            self.transport: Any = None
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                self.handler.message(self, frame.get_payload_as_bytes() if self.payload else b"")
            elif kind is WSMsgType.CLOSE:
                if not transport.is_close_frame_sent:
                    transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if not self.done.done():
                self.done.set_result(None)
            self.handler.closed(self)

        def send(self, data: bytes) -> None:
            self.transport.send(WSMsgType.TEXT, data)

        def close(self) -> None:
            if not self.transport.is_close_frame_sent:
                self.transport.send_close(WSCloseCode.OK)

    async def open_conn(port: int, path: str, handler: Handler, payload: bool = False) -> Any:
        """Open a socket to ``path``; return it once the handshake is done."""
        _, conn = await picows.ws_connect(
            lambda: PicowsConn(handler, payload),
            f"ws://127.0.0.1:{port}{path}",
            websocket_handshake_timeout=30,
        )
        handler.opened(conn)
        return conn

else:
    import wsproto
    import wsproto.events as wse

    class WsprotoConn(asyncio.Protocol):
        """A wsproto client over an asyncio protocol (the slow fallback)."""

        def __init__(self, handler: Handler, host: str, path: str) -> None:
            self.handler = handler
            self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            self.host, self.path = host, path
            self.transport: Any = None
            self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.parts: list[bytes] = []
            self.close_sent = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transport.write(self.ws.send(wse.Request(host=self.host, target=self.path)))

        def data_received(self, data: bytes) -> None:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, wse.AcceptConnection):
                    self.accepted.set_result(None)
                elif isinstance(event, wse.RejectConnection):
                    self.accepted.set_exception(ConnectionError("handshake rejected"))
                elif isinstance(event, wse.Message):
                    chunk = event.data
                    self.parts.append(chunk.encode() if isinstance(chunk, str) else chunk)
                    if event.message_finished:
                        message, self.parts = b"".join(self.parts), []
                        self.handler.message(self, message)
                elif isinstance(event, wse.Ping):
                    self.transport.write(self.ws.send(event.response()))
                elif isinstance(event, wse.CloseConnection):
                    if not self.close_sent:
                        self.close_sent = True
                        self.transport.write(self.ws.send(event.response()))
                    self.transport.close()

        def connection_lost(self, exc: BaseException | None) -> None:
            if not self.accepted.done():
                self.accepted.set_exception(exc or ConnectionError("connection lost"))
            if not self.done.done():
                self.done.set_result(None)
            self.handler.closed(self)

        def send(self, data: bytes) -> None:
            if not self.close_sent:
                self.transport.write(self.ws.send(wse.TextMessage(data=data.decode())))

        def close(self) -> None:
            if not self.close_sent:
                self.close_sent = True
                self.transport.write(self.ws.send(wse.CloseConnection(code=1000)))

    async def open_conn(port: int, path: str, handler: Handler, payload: bool = False) -> Any:
        """Open a socket to ``path``; return it once the handshake is done."""
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: WsprotoConn(handler, f"127.0.0.1:{port}", path), "127.0.0.1", port
        )
        await asyncio.wait_for(conn.accepted, 30)
        handler.opened(conn)
        return conn


async def open_many(
    count: int, port: int, path: str, make: Callable[[], Handler], payload: bool = False
) -> list[Any]:
    """Open ``count`` sockets, a bounded number of handshakes at a time."""
    conns: list[Any] = []
    gate = asyncio.Semaphore(64)

    async def one() -> None:
        async with gate:
            conns.append(await open_conn(port, path, make(), payload))

    await asyncio.gather(*(one() for _ in range(count)))
    return conns


async def close_all(conns: list[Any], wait: float = 10.0) -> None:
    """Close every socket and wait (bounded) for the server to let go."""
    for conn in conns:
        conn.close()
    if conns:
        await asyncio.wait([conn.done for conn in conns], timeout=wait)


# -- the clock and the window --------------------------------------------------------------


class Window:
    """The counted interval [T0, T1], and the CPU times read at its edges."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.t0 = self.t1 = float("inf")
        self.open = False
        self.over = asyncio.get_running_loop().create_future()
        self.cpu: dict[str, float] = {}

    def start(self, t0: float, t1: float) -> None:
        loop = asyncio.get_running_loop()
        self.t0, self.t1 = t0, t1
        delay = t0 - time.monotonic()
        loop.call_later(max(delay, 0), self._begin)
        loop.call_later(max(t1 - time.monotonic(), 0), self._end)

    def _begin(self) -> None:
        self.open = True
        self.cpu["client0"] = time.process_time()
        self.cpu["server0"] = cpu_seconds(self.server_pid)
        self.cpu["wall0"] = time.monotonic()

    def _end(self) -> None:
        self.open = False
        self.cpu["client"] = time.process_time() - self.cpu.pop("client0")
        self.cpu["server"] = cpu_seconds(self.server_pid) - self.cpu.pop("server0")
        self.cpu["wall"] = time.monotonic() - self.cpu.pop("wall0")
        if not self.over.done():
            self.over.set_result(None)


def payload(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


# -- scenarios -----------------------------------------------------------------------------


class Echo(Handler):
    """Closed loop: one message in flight per socket; the RTT of each is recorded."""

    def __init__(self, window: Window, data: bytes, rtts: list[int]) -> None:
        self.window, self.data, self.rtts = window, data, rtts
        self.sent_at = 0.0
        self.conn: Any = None

    def opened(self, conn: Any) -> None:
        self.conn = conn

    def go(self) -> None:
        self.sent_at = time.monotonic()
        self.conn.send(self.data)

    def message(self, conn: Any, data: bytes) -> None:
        now = time.monotonic()
        window = self.window
        if window.open:
            self.rtts.append(int((now - self.sent_at) * 1e6))
        if now < window.t1:
            self.sent_at = now
            conn.send(self.data)


async def run_echo(spec: dict[str, Any], window: Window, commands: asyncio.Queue[str]) -> dict:
    rtts: list[int] = []
    data = payload(spec["size"])
    handlers: list[Echo] = []

    def make() -> Handler:
        handler = Echo(window, data, rtts)
        handlers.append(handler)
        return handler

    conns = await open_many(spec["sockets"], spec["port"], "/echo", make)
    print("ready", flush=True)
    t0, t1 = map(float, (await commands.get()).split()[1:3])
    window.start(t0, t1)
    for handler in handlers:
        handler.go()
    await window.over
    await asyncio.sleep(0.05)
    await close_all(conns)
    return {"messages": len(rtts), "rtts_us": rtts}


class OneShot(Handler):
    """A handshake's socket: one message, its echo, then the close."""

    def __init__(self) -> None:
        self.echoed = asyncio.get_running_loop().create_future()

    def message(self, conn: Any, data: bytes) -> None:
        if not self.echoed.done():
            self.echoed.set_result(None)


async def run_handshakes(
    spec: dict[str, Any], window: Window, commands: asyncio.Queue[str]
) -> dict:
    data = payload(16)
    done: list[float] = []
    errors = 0

    async def loop() -> None:
        nonlocal errors
        while time.monotonic() < window.t1:
            try:
                handler = OneShot()
                conn = await open_conn(spec["port"], "/echo", handler)
                conn.send(data)
                await asyncio.wait_for(handler.echoed, 10)
                conn.close()
                await asyncio.wait_for(conn.done, 10)
            except (TimeoutError, OSError, ConnectionError) as exc:
                errors += 1
                if errors > 100:
                    raise RuntimeError(f"too many failed handshakes: {exc!r}") from exc
                await asyncio.sleep(0.01)
                continue
            if window.open:
                done.append(time.monotonic())

    print("ready", flush=True)
    t0, t1 = map(float, (await commands.get()).split()[1:3])
    window.start(t0, t1)
    await asyncio.gather(*(loop() for _ in range(spec["concurrency"])))
    if not window.over.done():
        await window.over
    return {"handshakes": len(done), "errors": errors}


async def run_hold(spec: dict[str, Any], window: Window, commands: asyncio.Queue[str]) -> dict:
    conns = await open_many(spec["sockets"], spec["port"], "/echo", Handler)
    print("ready", flush=True)
    await commands.get()
    await close_all(conns)
    return {"sockets": len(conns)}


class Subscriber(Handler):
    """A socket in the room: counts the deliveries of the publish in flight."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def message(self, conn: Any, data: bytes) -> None:
        state = self.state
        if int(data.split(b" ", 1)[0]) != state["seq"]:
            return  # a late copy of an earlier publish that timed out
        state["left"] -= 1
        if state["left"] == 0:
            state["last"] = time.monotonic()
            state["all"].set_result(None)


async def run_fanout(spec: dict[str, Any], window: Window, commands: asyncio.Queue[str]) -> dict:
    loop = asyncio.get_running_loop()
    count = spec["subscribers"]
    state: dict[str, Any] = {"seq": -1, "left": 0, "all": loop.create_future(), "last": 0.0}
    conns = await open_many(count, spec["port"], "/fan", lambda: Subscriber(state), payload=True)
    print("ready", flush=True)
    await commands.get()
    await asyncio.sleep(0.2)  # let every subscription settle on the server
    publisher = conns[0]
    lags: list[float] = []
    timeouts = 0

    async def publish(seq: int) -> float | None:
        state.update(seq=seq, left=count, all=loop.create_future())
        sent = time.monotonic()
        publisher.send(b"%d %d" % (seq, time.monotonic_ns()))
        try:
            await asyncio.wait_for(state["all"], 30)
        except TimeoutError:
            return None
        return float(state["last"] - sent)

    for seq in range(spec["warmup"]):
        await publish(seq)
    window._begin()
    for seq in range(spec["warmup"], spec["warmup"] + spec["publishes"]):
        lag = await publish(seq)
        if lag is None:
            timeouts += 1
        else:
            lags.append(lag)
    window._end()
    await close_all(conns)
    return {
        "publishes": len(lags),
        "deliveries": len(lags) * count,
        "slowest_lag_s": lags,
        "timeouts": timeouts,
    }


SCENARIOS = {"echo": run_echo, "handshakes": run_handshakes, "hold": run_hold, "fanout": run_fanout}


async def main(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    pending = b""

    def on_input() -> None:
        nonlocal pending
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            loop.remove_reader(sys.stdin.fileno())
            commands.put_nowait("eof")
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            commands.put_nowait(line.decode())

    loop.add_reader(sys.stdin.fileno(), on_input)
    window = Window(spec["server_pid"])
    result = await SCENARIOS[spec["kind"]](spec, window, commands)
    result.update(window.cpu)
    result["backend"] = BACKEND
    print(json.dumps(result), flush=True)


def run() -> None:
    from .server import raise_fd_limit

    raise_fd_limit()
    random.seed(os.getpid())
    spec = json.loads(sys.argv[1])
    try:
        if FALLBACK:
            raise ImportError("the fallback client was asked for")
        import uvloop
    except ImportError:
        asyncio.run(main(spec))
    else:
        uvloop.run(main(spec))


if __name__ == "__main__":
    run()
