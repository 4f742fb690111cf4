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
import zlib
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


def queued_seconds(pid: int) -> float:
    """Time process ``pid``'s main thread spent runnable but waiting for a CPU (other
    processes had it): what a busy machine takes from the server. 0 where not known."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


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


# -- permessage-deflate, the way a browser runs it -----------------------------------------

#: What Chrome offers on every socket (RFC 7692): "compress both ways; you may choose my
#: window". Context takeover is the client's to keep unless the server says otherwise.
OFFER = "permessage-deflate; client_max_window_bits"
TAIL = b"\x00\x00\xff\xff"  # the empty stored block each compressed message drops


class Deflate:
    """The client's half of a negotiated permessage-deflate, as a browser runs it: every
    message it sends is compressed; messages that arrive with RSV1 are inflated. ``response``
    is the server's ``Sec-WebSocket-Extensions`` value."""

    def __init__(self, response: str) -> None:
        self.response = response
        parameters: dict[str, str] = {}
        for part in response.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            parameters[key] = value.strip('"')
        self.client_bits = int(parameters.get("client_max_window_bits") or 15)
        self.server_bits = int(parameters.get("server_max_window_bits") or 15)
        self.client_takeover = "client_no_context_takeover" not in parameters
        self.server_takeover = "server_no_context_takeover" not in parameters
        self.deflater: Any = None
        self.inflater: Any = None
        #: Bytes of the messages before and after compression, each way (raw, wire).
        self.sent = [0, 0]
        self.received = [0, 0]
        self.compressed_in = 0

    def compress(self, data: bytes) -> bytes:
        if self.deflater is None:
            self.deflater = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.client_bits
            )
        out = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        if not self.client_takeover:
            self.deflater = None
        out = out[: -len(TAIL)]
        self.sent[0] += len(data)
        self.sent[1] += len(out)
        return out

    def inflate(self, data: bytes) -> bytes:
        if self.inflater is None:
            self.inflater = zlib.decompressobj(-self.server_bits)
        out = self.inflater.decompress(data + TAIL)
        if not self.server_takeover:
            self.inflater = None
        self.compressed_in += 1
        self.received[0] += len(out)
        self.received[1] += len(data)
        return out

    def forget(self) -> None:
        """Drop the zlib state (a socket that will send and receive nothing more)."""
        self.deflater = self.inflater = None


# -- connections: one small interface over picows or wsproto -------------------------------


class Handler:
    """What a scenario does with one socket. ``conn`` has ``send(bytes)``, ``close()`` and
    ``deflate`` (a :class:`Deflate` once the server accepted the offer, else ``None``)."""

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
            self.deflate: Deflate | None = None
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport
            response = transport.response.headers.get("Sec-WebSocket-Extensions")
            if response:
                self.deflate = Deflate(response)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                if not frame.fin:  # the servers send every message as one frame
                    raise RuntimeError("a fragmented message: the client does not take those")
                if frame.rsv1:
                    if self.deflate is None:
                        raise RuntimeError("a compressed message on a socket without deflate")
                    data = self.deflate.inflate(frame.get_payload_as_bytes())
                    self.handler.message(self, data if self.payload else b"")
                else:
                    self.handler.message(
                        self, frame.get_payload_as_bytes() if self.payload else b""
                    )
            elif kind is WSMsgType.CLOSE:
                if not transport.is_close_frame_sent:
                    transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if not self.done.done():
                self.done.set_result(None)
            self.handler.closed(self)

        def send(self, data: bytes) -> None:
            if self.deflate is None:
                self.transport.send(WSMsgType.TEXT, data)
            else:
                self.transport.send(WSMsgType.TEXT, self.deflate.compress(data), rsv1=True)

        def close(self) -> None:
            if not self.transport.is_close_frame_sent:
                self.transport.send_close(WSCloseCode.OK)

    async def open_conn(
        port: int, path: str, handler: Handler, payload: bool = False, deflate: bool = False
    ) -> Any:
        """Open a socket to ``path``; return it once the handshake is done. With ``deflate``
        the client offers permessage-deflate as Chrome does."""
        _, conn = await picows.ws_connect(
            lambda: PicowsConn(handler, payload),
            f"ws://127.0.0.1:{port}{path}",
            websocket_handshake_timeout=30,
            extra_headers={"Sec-WebSocket-Extensions": OFFER} if deflate else None,
        )
        handler.opened(conn)
        return conn

else:
    import wsproto
    import wsproto.events as wse
    from wsproto.extensions import PerMessageDeflate

    class ChromeDeflate(PerMessageDeflate):
        """wsproto's permessage-deflate, offered with Chrome's parameters; it counts the
        compressed messages that arrive in a :class:`Deflate` (whose zlib side is unused)."""

        stats: Deflate | None = None

        def offer(self) -> str:
            return OFFER.split("; ", 1)[1]

        def finalize(self, offer: str) -> None:
            self.stats = Deflate(offer)
            super().finalize(offer)

        def frame_inbound_header(self, proto: Any, opcode: Any, rsv: Any, length: int) -> Any:
            if rsv.rsv1 and self.stats is not None:
                self.stats.compressed_in += 1
            return super().frame_inbound_header(proto, opcode, rsv, length)

    class WsprotoConn(asyncio.Protocol):
        """A wsproto client over an asyncio protocol (the slow fallback). With deflate,
        wsproto compresses and inflates; ``deflate`` is then a :class:`Deflate` that only
        describes the response (its byte counts stay at zero)."""

        def __init__(self, handler: Handler, host: str, path: str, deflate: bool) -> None:
            self.handler = handler
            self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            self.host, self.path = host, path
            self.extensions = [ChromeDeflate()] if deflate else []
            self.deflate: Deflate | None = None
            self.transport: Any = None
            self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.parts: list[bytes] = []
            self.close_sent = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            request = wse.Request(host=self.host, target=self.path, extensions=self.extensions)
            transport.write(self.ws.send(request))

        def data_received(self, data: bytes) -> None:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, wse.AcceptConnection):
                    for extension in event.extensions:
                        if isinstance(extension, ChromeDeflate):
                            self.deflate = extension.stats
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

    async def open_conn(
        port: int, path: str, handler: Handler, payload: bool = False, deflate: bool = False
    ) -> Any:
        """Open a socket to ``path``; return it once the handshake is done."""
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: WsprotoConn(handler, f"127.0.0.1:{port}", path, deflate), "127.0.0.1", port
        )
        await asyncio.wait_for(conn.accepted, 30)
        handler.opened(conn)
        return conn


async def open_many(
    count: int,
    port: int,
    path: str,
    make: Callable[[], Handler],
    payload: bool = False,
    deflate: bool = False,
) -> list[Any]:
    """Open ``count`` sockets, a bounded number of handshakes at a time."""
    conns: list[Any] = []
    gate = asyncio.Semaphore(64)

    async def one() -> None:
        async with gate:
            conns.append(await open_conn(port, path, make(), payload, deflate))

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
        self.cpu["queued0"] = queued_seconds(self.server_pid)
        self.cpu["wall0"] = time.monotonic()

    def _end(self) -> None:
        self.open = False
        self.cpu["client"] = time.process_time() - self.cpu.pop("client0")
        self.cpu["server"] = cpu_seconds(self.server_pid) - self.cpu.pop("server0")
        self.cpu["queued"] = queued_seconds(self.server_pid) - self.cpu.pop("queued0")
        self.cpu["wall"] = time.monotonic() - self.cpu.pop("wall0")
        if not self.over.done():
            self.over.set_result(None)


def payload(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "NFLX", "INTC", "ORCL")


def json_messages(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` different JSON documents of exactly ``size`` bytes, like the updates a web
    app streams: the same keys every time, different values (seeded, so every run and every
    server gets the same ones)."""
    rng = random.Random(seed)
    out = []
    for seq in range(count):
        items: list[dict[str, Any]] = []
        document: dict[str, Any] = {"type": "trades", "seq": seq, "items": items, "note": ""}
        while True:
            items.append(
                {
                    "id": rng.randrange(10**8),
                    "symbol": rng.choice(SYMBOLS),
                    "price": round(rng.uniform(1, 1000), 2),
                    "qty": rng.randrange(1, 1000),
                    "side": rng.choice(("buy", "sell")),
                }
            )
            if len(json.dumps(document, separators=(",", ":"))) > size:
                items.pop()
                break
        short = size - len(json.dumps(document, separators=(",", ":")))
        document["note"] = "".join(rng.choice("abcdefghij klmnop") for _ in range(short))
        text = json.dumps(document, separators=(",", ":")).encode()
        assert len(text) == size, (len(text), size)
        out.append(text)
    return out


def messages(spec: dict[str, Any]) -> list[bytes]:
    """What a scenario's sockets send: 16 fixed bytes a message by default, or, with
    ``"json": true``, a pool of different JSON documents of ``size`` bytes, or the ``"texts"``
    given."""
    if spec.get("texts"):
        return [text.encode() for text in spec["texts"]]
    if spec.get("json"):
        return json_messages(64, spec["size"], 1)
    return [payload(spec["size"])]


# -- scenarios -----------------------------------------------------------------------------


class Echo(Handler):
    """Closed loop: one message in flight per socket; the RTT of each is recorded. The
    socket sends its messages in turn, starting at ``first``."""

    def __init__(self, window: Window, data: list[bytes], rtts: list[int], first: int) -> None:
        self.window, self.data, self.rtts = window, data, rtts
        self.next = first % len(data)
        self.sent_at = 0.0
        self.conn: Any = None

    def opened(self, conn: Any) -> None:
        self.conn = conn

    def send(self, conn: Any) -> None:
        data = self.data
        conn.send(data[self.next])
        self.next = (self.next + 1) % len(data)

    def go(self) -> None:
        self.sent_at = time.monotonic()
        self.send(self.conn)

    def message(self, conn: Any, data: bytes) -> None:
        now = time.monotonic()
        window = self.window
        if window.open:
            self.rtts.append(int((now - self.sent_at) * 1e6))
        if now < window.t1:
            self.sent_at = now
            self.send(conn)


def deflate_summary(conns: list[Any]) -> dict[str, Any]:
    """How the server answered the deflate offer, and what compression did to the bytes."""
    deflates = [conn.deflate for conn in conns if conn.deflate is not None]
    out: dict[str, Any] = {
        "negotiated": len(deflates),
        "extensions": deflates[0].response if deflates else None,
        "compressed_in": sum(d.compressed_in for d in deflates),
    }
    for key in ("sent", "received"):
        raw = sum(getattr(d, key)[0] for d in deflates)
        wire = sum(getattr(d, key)[1] for d in deflates)
        out[f"{key}_raw"], out[f"{key}_wire"] = raw, wire
    return out


async def run_echo(spec: dict[str, Any], window: Window, commands: asyncio.Queue[str]) -> dict:
    rtts: list[int] = []
    data = messages(spec)
    handlers: list[Echo] = []

    def make() -> Handler:
        handler = Echo(window, data, rtts, len(handlers))
        handlers.append(handler)
        return handler

    deflate = bool(spec.get("deflate"))
    path = spec.get("path", "/echo")
    conns = await open_many(spec["sockets"], spec["port"], path, make, deflate=deflate)
    print("ready", flush=True)
    t0, t1 = map(float, (await commands.get()).split()[1:3])
    window.start(t0, t1)
    for handler in handlers:
        handler.go()
    await window.over
    await asyncio.sleep(0.05)
    await close_all(conns)
    return {"messages": len(rtts), "rtts_us": rtts, **deflate_summary(conns)}


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


class Greeter(Handler):
    """A socket that sends one message as soon as it is open and is told of its echo."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.echoed = asyncio.get_running_loop().create_future()

    def opened(self, conn: Any) -> None:
        conn.send(self.data)

    def message(self, conn: Any, data: bytes) -> None:
        if not self.echoed.done():
            self.echoed.set_result(data)


async def run_hold(spec: dict[str, Any], window: Window, commands: asyncio.Queue[str]) -> dict:
    """Open idle sockets. With ``size``, each first sends one message and waits for its echo
    (checked), a bounded number of sockets at a time, like browsers that open a page, say
    hello and then wait."""
    size = spec.get("size", 0)
    deflate = bool(spec.get("deflate"))
    if not size:
        conns = await open_many(spec["sockets"], spec["port"], "/echo", Handler, deflate=deflate)
    else:
        pool = messages({**spec, "size": size})
        conns = []
        gate = asyncio.Semaphore(64)

        async def one(index: int) -> None:
            data = pool[index % len(pool)]
            handler = Greeter(data)
            async with gate:
                conn = await open_conn(spec["port"], "/echo", handler, True, deflate)
                conns.append(conn)
                echo = await asyncio.wait_for(handler.echoed, 30)
            if echo != data:
                raise RuntimeError(f"the echo of a {len(data)}-byte message came back wrong")
            if conn.deflate is not None:
                conn.deflate.forget()  # a browser's, not the server's: keep the client small

        await asyncio.gather(*(one(i) for i in range(spec["sockets"])))
    print("ready", flush=True)
    await commands.get()
    await close_all(conns)
    return {"sockets": len(conns), **deflate_summary(conns)}


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
