"""The edges of a socket's life over a real ``trioweb run``, with real clients.

The app is tests/edge_app.py, served by ``trioweb run`` in a process of its own on a free loopback
port. Clients: trio-websocket (in this process), the ``websockets`` package and Node's ``ws``
(subprocesses, tests/clients/), headless Chromium over DevTools (tests/cdp.py), and raw sockets
for what no well-behaved client sends. Each checks what the client saw (close code, a completed
closing handshake, when TCP closed) and what the handler saw (the app records the close code
its handler and its ``after_websocket`` hook saw, and answers them over HTTP).

Node's ``ws`` comes from tests/clients/package-lock.json (``npm ci --prefix tests/clients``) and
Chromium from Debian: without them those tests skip, and fail when ``CI`` is set.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import edge_app
import pytest
import trio
import trio_websocket
from cdp import launch
from helpers import HOST
from wsproto.frame_protocol import FrameProtocol, Opcode

from trioweb.app import DEFAULT_MAX_MESSAGE_SIZE

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"

ATTEMPTS = 10  # each client, in a row
OVERSIZE = edge_app.LIMIT + 1
TCP_CLOSE = 1.0  # seconds from the send to the end of TCP, at most
STEP = 15  # seconds any one client run may take
MiB = 2**20
MAX_READS = 100_000  # bounds every read loop in count (trio.fail_after bounds it in time)

TEXT, BINARY, CLOSE, PING = 0x1, 0x2, 0x8, 0x9
RSV1, RSV2 = 0x40, 0x20


# -- the server ------------------------------------------------------------------------------


@dataclass
class RunningServer:
    """A ``trioweb run`` process: its port, its pid, its log (stderr)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str, scheme: str = "ws") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    def peak_rss(self) -> int:
        """The process's peak resident set size (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/PID/status")

    def reset_peak_rss(self) -> None:
        """Make the peak the current RSS (proc(5), clear_refs: 5), so that a peak measured
        from here on is this test's, not left over from startup or an earlier test."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")


def _announced_port(
    process: subprocess.Popen[bytes], timeout: float, stream: Any = None, marker: str = ""
) -> int:
    """Read stdout (or ``stream``) up to the "serving ... on http://HOST:PORT" line (or the
    first line with ``marker``), within ``timeout``."""
    stream = stream if stream is not None else process.stdout
    assert stream is not None
    output = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        end = time.monotonic() + timeout
        for _ in range(MAX_READS):
            if b"\n" in output and (not marker or marker.encode() in output):
                break
            left = end - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"the server announced nothing in {timeout}s: {output!r}")
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"the server exited before serving: {output!r}")
            output += chunk
    if marker:
        line = next(line for line in output.decode().splitlines() if marker in line)
        return int(line.split(marker, 1)[1].split()[0].rsplit(":", 1)[1])
    line = output.split(b"\n", 1)[0].decode()
    assert line.startswith("trioweb: serving ") and " on http://" in line, line
    return int(line.split(" on http://", 1)[1].split()[0].rsplit(":", 1)[1])


@contextmanager
def trioweb_run(target: str, log: Path) -> Iterator[RunningServer]:
    """``trioweb run TARGET`` on a free loopback port for the block; killed at the end."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "trioweb", "run", target, "--host", HOST, "--port", "0"]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*command, "--no-access-log"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr
        )
    assert process.stdout is not None
    # Nothing is expected on stdout after the announcement; it is drained anyway, so that the
    # server can never block on a full pipe.
    drain = threading.Thread(target=process.stdout.read, daemon=True)
    try:
        port = _announced_port(process, timeout=30)
        drain.start()
        yield RunningServer(process, port, log)
        assert process.poll() is None, "the server exited during the tests"
    finally:
        process.kill()
        process.wait()
        if drain.is_alive():
            drain.join(5)
        process.stdout.close()
    logged = log.read_text()
    assert "Traceback" not in logged and "[ERROR]" not in logged, logged


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """tests/edge_app.py's ``app`` (the default close timeout), for the whole module."""
    with trioweb_run("tests.edge_app:app", tmp_path_factory.mktemp("edge") / "app.log") as running:
        yield running


@pytest.fixture(scope="module")
def plain_hypercorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """tests/edge_app.py's ``app`` under the plain ``hypercorn`` command (its trio worker), not
    ``trioweb run``: the app installs trioweb's changes to hypercorn at startup."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio"]
    command += ["--bind", f"{HOST}:0", "tests.edge_app:app"]
    # A session of its own: hypercorn runs its worker in a child process, killed with it.
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stderr=subprocess.PIPE, start_new_session=True
    )
    assert process.stderr is not None
    drain = threading.Thread(target=process.stderr.read, daemon=True)
    try:
        port = _announced_port(process, 30, process.stderr, "Running on http://")
        drain.start()
        yield RunningServer(process, port, tmp_path_factory.mktemp("edge") / "unused.log")
        assert process.poll() is None, "hypercorn exited during the tests"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if drain.is_alive():
            drain.join(5)
        process.stderr.close()


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The same app with ``close_timeout=0.5``."""
    log = tmp_path_factory.mktemp("edge") / "impatient.log"
    with trioweb_run("tests.edge_app:impatient", log) as running:
        yield running


def required(what: str, how: str) -> NoReturn:
    """A tool a test needs is missing: skip, but fail in CI."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must install it (.ci/run does)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def node_ws() -> list[str]:
    """The command that runs tests/clients/ws_client.js with Node and its ``ws`` package."""
    node = shutil.which("node")
    if node is None:
        required("node", "Debian: apt-get install nodejs npm")
    if not (CLIENTS / "node_modules" / "ws").is_dir():
        required("Node's ws package", "npm ci --prefix tests/clients")
    return [str(node), str(CLIENTS / "ws_client.js")]


def tags(name: str, count: int) -> tuple[str, list[str]]:
    """A fresh tag prefix for a client run, and the tags of its ``count`` connections."""
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    return prefix, [f"{prefix}-{attempt}" for attempt in range(count)]


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    for _ in range(MAX_READS):
        chunk = await stream.receive_some()
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"no end of stream after {MAX_READS} reads")


async def records(server: RunningServer, wanted: list[str]) -> dict[str, dict[str, list[Any]]]:
    """What the handler and the after hook of each tagged connection saw: [code, reason].

    The app answers once every hook has run (at most 5 s)."""
    target = f"/records?tags={','.join(wanted)}"
    request = f"GET {target} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nConnection: close\r\n\r\n"
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(HOST, server.port)
        async with stream:
            await stream.send_all(request.encode())
            answer = await read_to_eof(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    return json.loads(body)  # type: ignore[no-any-return]


def handler_saw(seen: dict[str, dict[str, list[Any]]], tag: str) -> tuple[Any, Any]:
    """The close codes the handler (in its ``finally``) and the after hook saw."""
    entry = seen.get(tag, {})
    return entry.get("handler", [None])[0], entry.get("after", [None])[0]


async def run_client(command: list[str]) -> list[dict[str, Any]]:
    """Run a client script; its JSON lines. Killed if it outlives :data:`STEP` seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with trio.fail_after(STEP):
        done = await trio.run_process(
            command, cwd=CLIENTS, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


# -- raw frames ------------------------------------------------------------------------------


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    keystream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(size, "big")


def frame(opcode: int, payload: bytes, *, bits: int = 0x80, masked: bool = True) -> bytes:
    """A frame as a client sends it: ``bits`` are FIN (0x80) and the RSV bits."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([bits | opcode, mask_bit | size])
    elif size < 2**16:
        head = bytes([bits | opcode, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([bits | opcode, mask_bit | 127]) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


class RawSocket:
    """A WebSocket client that sends exactly the bytes it is given."""

    def __init__(self, stream: trio.SocketStream, head: bytes, rest: bytes) -> None:
        self.stream = stream
        #: The handshake's answer, status line and headers, lowercased.
        self.head = head.lower()
        self._buffer = rest

    @classmethod
    async def open(cls, port: int, target: str, *, deflate: bool = False) -> RawSocket:
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{offer}\r\n"
        )
        stream = await trio.open_tcp_stream(HOST, port)
        try:
            await stream.send_all(request.encode())
            received = b""
            for _ in range(MAX_READS):
                if b"\r\n\r\n" in received:
                    break
                chunk = await stream.receive_some()
                assert chunk, f"the server closed during the handshake: {received!r}"
                received += chunk
            head, _, rest = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
        except BaseException:
            await stream.aclose()
            raise
        return cls(stream, head, rest)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self, size: int) -> bool:
        for _ in range(MAX_READS):
            if len(self._buffer) >= size:
                return True
            chunk = await self.stream.receive_some()
            if not chunk:
                return False
            self._buffer += chunk
        raise AssertionError(f"fewer than {size} bytes after {MAX_READS} reads")

    async def _take(self, size: int) -> bytes:
        assert await self._fill(size), f"the stream ended inside a frame: {self._buffer!r}"
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def receive_frame(self) -> tuple[int, bytes] | None:
        """The server's next frame (opcode, payload), or None at the end of TCP."""
        if not await self._fill(1):
            return None
        first, second = await self._take(2)
        assert second & 0x80 == 0, "a server must not mask its frames"
        size = second & 0x7F
        if size >= 126:
            size = int.from_bytes(await self._take(2 if size == 126 else 8), "big")
        return first & 0x0F, await self._take(size)

    async def receive_close(self) -> tuple[int, str]:
        """Read up to the server's Close frame (dropping other frames); its code and reason."""
        for _ in range(MAX_READS):
            received = await self.receive_frame()
            assert received is not None, "TCP closed with no Close frame"
            opcode, payload = received
            if opcode == CLOSE:
                return int.from_bytes(payload[:2], "big"), payload[2:].decode()
        raise AssertionError(f"no Close frame in {MAX_READS} frames")

    async def receive_eof(self) -> bytes:
        """Read up to the end of TCP; what came after the last frame read."""
        rest, self._buffer = self._buffer, b""
        return rest + await read_to_eof(self.stream)


# -- 1. an oversize message, with each client ------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One attempt, as the client and the app saw it."""

    code: int | None  # the close code the client received
    clean: bool  # the client received a Close frame and sent its own (the closing handshake)
    fast: bool  # TCP closed within TCP_CLOSE of the send
    handler: int | None  # the code the handler saw
    after: int | None  # the code the after hook saw


ALL_1009 = [Seen(1009, True, True, 1009, 1009)] * ATTEMPTS


def oversize(attempt: int) -> str | bytes:
    """Text on even attempts, binary on odd ones."""
    return "x" * OVERSIZE if attempt % 2 == 0 else bytes(OVERSIZE)


class Wire(trio.abc.Stream):
    """A TCP stream that keeps what the client sent and notes when the server closed TCP."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.sent = b""
        self.eof = trio.Event()
        self.eof_at = 0.0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += bytes(data)
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        if not data and not self.eof.is_set():
            self.eof_at = trio.current_time()
            self.eof.set()
        return bytes(data)

    async def aclose(self) -> None:
        await self.stream.aclose()

    def close_frames_sent(self) -> list[tuple[int, str]]:
        """The Close frames in what the client sent, parsed as a server would."""
        protocol = FrameProtocol(client=False, extensions=[])
        protocol.receive_bytes(self.sent.partition(b"\r\n\r\n")[2])
        return [
            (int(frame.payload[0]), frame.payload[1])
            for frame in protocol.received_frames()
            if frame.opcode is Opcode.CLOSE
        ]


async def test_an_oversize_message_gets_1009_and_a_clean_close_with_trio_websocket(
    server: RunningServer,
) -> None:
    _, wanted = tags("trio-websocket", ATTEMPTS)
    client: list[tuple[int, bool, float]] = []
    for attempt, tag in enumerate(wanted):
        with trio.fail_after(STEP):
            wire = Wire(await trio.open_tcp_stream(HOST, server.port))
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, wire, HOST, f"/limited?tag={tag}"
                )
                start = trio.current_time()
                await ws.send_message(oversize(attempt))
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                await wire.eof.wait()  # trio-websocket waits for the server to close TCP
                await ws.aclose()
        code = closed.value.reason.code
        client.append(
            (
                code,
                wire.close_frames_sent() == [(code, closed.value.reason.reason)],
                wire.eof_at - start,
            )
        )
    seen = await records(server, wanted)
    assert [
        Seen(code, clean, elapsed < TCP_CLOSE, *handler_saw(seen, tag))
        for (code, clean, elapsed), tag in zip(client, wanted, strict=True)
    ] == ALL_1009, client
    print(f"trio-websocket: slowest TCP close {max(e for *_, e in client):.3f}s")


@pytest.mark.parametrize("fragment", [False, True], ids=["whole", "fragmented"])
@pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "no-deflate"])
async def test_an_oversize_message_gets_1009_and_a_clean_close_with_websockets(
    server: RunningServer, deflate: bool, fragment: bool
) -> None:
    prefix, wanted = tags("websockets", ATTEMPTS)
    command = [sys.executable, "websockets_client.py", server.url("/limited"), prefix]
    command += ["oversize", "--size", str(OVERSIZE), "--attempts", str(ATTEMPTS)]
    command += ["--deflate"] * deflate + ["--fragment"] * fragment
    client = await run_client(command)
    seen = await records(server, wanted)
    assert [
        Seen(
            result["rcvd"] and result["rcvd"][0],
            bool(result["rcvd"] and result["sent"] and result["rcvd_then_sent"]),
            result["elapsed"] < TCP_CLOSE,
            *handler_saw(seen, tag),
        )
        for result, tag in zip(client, wanted, strict=True)
    ] == ALL_1009, client
    assert {(tuple(r["extensions"]), r["error"]) for r in client} == {
        (("permessage-deflate",) if deflate else (), None)
    }
    print(f"websockets: slowest TCP close {max(r['elapsed'] for r in client):.3f}s")


@pytest.mark.parametrize("fragment", [False, True], ids=["whole", "fragmented"])
@pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "no-deflate"])
async def test_an_oversize_message_gets_1009_and_a_clean_close_with_node_ws(
    server: RunningServer, node_ws: list[str], deflate: bool, fragment: bool
) -> None:
    prefix, wanted = tags("node-ws", ATTEMPTS)
    client = await run_client(
        [
            *node_ws,
            server.url("/limited"),
            prefix,
            str(OVERSIZE),
            str(ATTEMPTS),
            str(int(deflate)),
            str(int(fragment)),
        ]
    )
    seen = await records(server, wanted)
    assert [
        Seen(
            result["code"],
            result["wasClean"],
            result["elapsed"] < TCP_CLOSE,
            *handler_saw(seen, tag),
        )
        for result, tag in zip(client, wanted, strict=True)
    ] == ALL_1009, client
    assert {(tuple(r["extensions"]), r["error"]) for r in client} == {
        (("permessage-deflate",) if deflate else (), None)
    }
    print(f"node ws: slowest TCP close {max(r['elapsed'] for r in client):.3f}s")


async def test_an_oversize_message_gets_1009_and_a_clean_close_with_chromium(
    server: RunningServer, chromium: str, tmp_path: Path
) -> None:
    prefix, wanted = tags("chromium", ATTEMPTS)
    # onclose fires once TCP is closed (Chromium, as a client, waits for the server to close
    # it after the closing handshake); wasClean says the handshake completed.
    script = f"""(async () => {{
        const results = [];
        for (let attempt = 0; attempt < {ATTEMPTS}; attempt++) {{
            results.push(await new Promise((resolve) => {{
                const ws = new WebSocket(`ws://${{location.host}}/limited?tag={prefix}-${{attempt}}`);
                let start = null;
                ws.onopen = () => {{
                    start = performance.now();
                    const size = {OVERSIZE};
                    ws.send(attempt % 2 === 0 ? "x".repeat(size) : new Uint8Array(size));
                }};
                ws.onclose = (event) => resolve({{
                    code: event.code,
                    wasClean: event.wasClean,
                    extensions: ws.extensions,
                    elapsed: start === null ? null : (performance.now() - start) / 1000,
                }});
            }}));
        }}
        return results;
    }})()"""
    with trio.fail_after(45):
        async with launch(chromium, tmp_path / "profile") as browser:
            page = await browser.new_page()
            await page.navigate(server.url("/", scheme="http"))
            client = await page.evaluate(script)
            assert page.errors == []
    seen = await records(server, wanted)
    assert [
        Seen(
            result["code"],
            result["wasClean"],
            result["elapsed"] < TCP_CLOSE,
            *handler_saw(seen, tag),
        )
        for result, tag in zip(client, wanted, strict=True)
    ] == ALL_1009, client
    assert all(r["extensions"].startswith("permessage-deflate") for r in client), client
    print(f"chromium: slowest TCP close {max(r['elapsed'] for r in client):.3f}s")


# -- 2. a deflate bomb -----------------------------------------------------------------------

BOMB_SIZE = 200 * MiB  # inflated


@cache
def deflate_bomb() -> bytes:
    """200 MiB of zeros, raw-deflated (RFC 7692: wbits -15, sync-flushed, tail stripped)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MiB)
    data = b"".join(deflater.compress(zeros) for _ in range(BOMB_SIZE // MiB))
    data += deflater.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


@pytest.mark.parametrize(
    ("route", "limit"), [("/limited", edge_app.LIMIT), ("/echo", DEFAULT_MAX_MESSAGE_SIZE)]
)
async def test_a_deflate_bomb_gets_1009_within_the_limit_and_the_server_goes_on(
    server: RunningServer, route: str, limit: int
) -> None:
    bomb = deflate_bomb()
    assert len(bomb) < 256 * 1024  # about 200 KiB on the wire
    _, (tag,) = tags("bomb", 1)
    with trio.fail_after(20):
        server.reset_peak_rss()
        before = server.peak_rss()
        ws = await RawSocket.open(server.port, f"{route}?tag={tag}", deflate=True)
        async with ws.stream:
            assert b"sec-websocket-extensions: permessage-deflate" in ws.head
            await ws.send(frame(BINARY, bomb, bits=0x80 | RSV1))
            code, reason = await ws.receive_close()
            await ws.send(frame(CLOSE, close_payload(code)))  # the closing handshake
            assert await ws.receive_eof() == b""
        after = server.peak_rss()
    growth = after - before
    print(f"{route}: peak RSS {before / MiB:.1f} MiB before, {after / MiB:.1f} MiB after")
    assert (code, reason) == (1009, f"message over the limit of {limit} bytes")
    assert growth < limit + 8 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"
    seen = await records(server, [tag])
    assert handler_saw(seen, tag) == (1009, 1009)
    await still_serving(server)


async def still_serving(server: RunningServer) -> None:
    """A fresh client still gets its echo, compressed both ways."""
    with trio.fail_after(10):
        ws = await RawSocket.open(server.port, "/echo", deflate=True)
        async with ws.stream:
            deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
            text = "still here " * 200  # over Compression.min_size: the echo is compressed too
            data = deflater.compress(text.encode()) + deflater.flush(zlib.Z_SYNC_FLUSH)
            await ws.send(frame(TEXT, data[:-4], bits=0x80 | RSV1))
            received = await ws.receive_frame()
            assert received is not None
            opcode, payload = received
            inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            assert (opcode, inflated.decode()) == (TEXT, text)


async def test_a_route_without_compression_declines_the_offer_and_an_rsv1_frame_gets_1002(
    server: RunningServer,
) -> None:
    _, (tag,) = tags("plain-bomb", 1)
    header = frame(BINARY, deflate_bomb(), bits=0x80 | RSV1)[:14]  # up to the mask key
    with trio.fail_after(10):
        ws = await RawSocket.open(server.port, f"/plain?tag={tag}", deflate=True)
        async with ws.stream:
            assert b"sec-websocket-extensions" not in ws.head
            # The server fails the connection on the frame's header: only the header is sent,
            # since unread bytes at its close would reset TCP and could lose the Close frame.
            await ws.send(header)
            code, _ = await ws.receive_close()
            assert await ws.receive_eof() == b""
    assert code == 1002
    assert handler_saw(await records(server, [tag]), tag) == (1002, 1002)


# -- 3. close codes both ways ----------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), [(4001, "bye"), (1001, "tab closed")])
async def test_the_clients_close_code_and_reason_reach_the_handler(
    server: RunningServer, code: int, reason: str
) -> None:
    prefix, _ = tags("client-close", 0)
    command = [sys.executable, "websockets_client.py", server.url("/echo"), prefix]
    (client,) = await run_client([*command, "close", "--code", str(code), "--reason", reason])
    seen = await records(server, [prefix])
    assert seen[prefix] == {"handler": [code, reason], "after": [code, reason]}
    # The server echoed the client's Close and closed TCP at once.
    assert (client["sent"], client["rcvd"]) == ([code, reason], [code, reason])
    assert client["elapsed"] < TCP_CLOSE


def compressed(data: bytes) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.parametrize(
    ("deflate", "data", "code"),
    [
        pytest.param(False, frame(0x3, b"reserved"), 1002, id="reserved-opcode"),
        pytest.param(False, frame(TEXT, b"unmasked", masked=False), 1002, id="unmasked"),
        pytest.param(False, frame(TEXT, b"rsv2", bits=0x80 | RSV2), 1002, id="rsv2"),
        pytest.param(False, frame(CLOSE, close_payload(999)), 1002, id="close-code-999"),
        pytest.param(False, frame(PING, b"p" * 126), 1002, id="ping-126-bytes"),
        pytest.param(False, frame(TEXT, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(
            True,
            frame(TEXT, compressed(b"\xff\xfe"), bits=0x80 | RSV1),
            1007,
            id="invalid-utf8-deflated",
        ),
        pytest.param(
            True,
            frame(BINARY, b"\xff\xff not deflate", bits=0x80 | RSV1),
            1007,
            id="corrupt-deflate",
        ),
    ],
)
async def test_a_protocol_error_gets_a_close_frame_with_its_code_and_the_handler_sees_it(
    server: RunningServer, deflate: bool, data: bytes, code: int
) -> None:
    _, (tag,) = tags("protocol-error", 1)
    with trio.fail_after(10):
        ws = await RawSocket.open(server.port, f"/echo?tag={tag}", deflate=deflate)
        async with ws.stream:
            assert (b"permessage-deflate" in ws.head) == deflate
            await ws.send(data)
            received, _ = await ws.receive_close()
            assert await ws.receive_eof() == b""  # then TCP closes, with nothing after
    assert received == code
    assert handler_saw(await records(server, [tag]), tag) == (code, code)


# -- 4. a client that never answers the server's Close ---------------------------------------


@pytest.mark.parametrize(
    ("route", "message", "code"),
    [
        ("/closes", frame(TEXT, b"close, please"), edge_app.SERVER_CLOSE[0]),
        ("/limited", frame(TEXT, b"x" * OVERSIZE), 1009),
    ],
    ids=["the-app-closes", "1009"],
)
async def test_a_client_that_never_answers_the_close_is_cut_off_after_close_timeout(
    impatient: RunningServer, route: str, message: bytes, code: int
) -> None:
    close_timeout = edge_app.IMPATIENT_CLOSE_TIMEOUT
    _, (tag,) = tags("no-answer", 1)
    with trio.fail_after(10):
        ws = await RawSocket.open(impatient.port, f"{route}?tag={tag}")
        async with ws.stream:
            start = trio.current_time()  # the server's close timer starts after this
            await ws.send(message)
            received, _ = await ws.receive_close()
            close_at = trio.current_time()
            assert await ws.receive_eof() == b""  # and this client never answers
            end = trio.current_time()
    print(f"{route}: TCP closed {end - close_at:.3f}s after the server's Close")
    assert received == code
    # Not before the close timeout (the client may still answer), and not much after it.
    assert close_timeout <= end - start < close_timeout + 0.5
    assert handler_saw(await records(impatient, [tag]), tag) == (code, code)


async def test_a_client_that_answers_a_1009_late_still_completes_the_closing_handshake(
    server: RunningServer,
) -> None:
    # A client on a slow link: its answer comes some time after the server's Close. The server
    # must keep TCP open for it (closing with the answer unread would reset the connection),
    # and close TCP once it has it, long before its 5 s close timer.
    _, (tag,) = tags("late-answer", 1)
    with trio.fail_after(10):
        ws = await RawSocket.open(server.port, f"/limited?tag={tag}")
        async with ws.stream:
            await ws.send(frame(TEXT, b"x" * OVERSIZE))
            code, _ = await ws.receive_close()
            with trio.move_on_after(0.3):  # the link's delay: nothing may come meanwhile
                early = await ws.receive_frame()
                pytest.fail(f"the server sent {early} before the client answered its Close")
            start = trio.current_time()
            await ws.send(frame(CLOSE, close_payload(code)))
            assert await ws.receive_eof() == b""
            elapsed = trio.current_time() - start
    assert code == 1009
    assert elapsed < TCP_CLOSE
    assert handler_saw(await records(server, [tag]), tag) == (1009, 1009)


# -- 5. under the plain hypercorn command --------------------------------------------------------


async def test_under_plain_hypercorn_the_app_gets_the_same_guarantees(
    plain_hypercorn: RunningServer,
) -> None:
    # Without trioweb's stream, hypercorn reports this close as 1006 and the 1009 below hangs.
    prefix, _ = tags("hypercorn-close", 0)
    command = [sys.executable, "websockets_client.py", plain_hypercorn.url("/echo"), prefix]
    await run_client([*command, "close", "--code", "4001", "--reason", "bye"])
    seen = await records(plain_hypercorn, [prefix])
    assert seen[prefix] == {"handler": [4001, "bye"], "after": [4001, "bye"]}
    prefix, wanted = tags("hypercorn-oversize", 3)
    command = [sys.executable, "websockets_client.py", plain_hypercorn.url("/limited"), prefix]
    command += ["oversize", "--size", str(OVERSIZE), "--attempts", "3", "--deflate"]
    client = await run_client(command)
    seen = await records(plain_hypercorn, wanted)
    for result, tag in zip(client, wanted, strict=True):
        assert result["rcvd"][0] == 1009 and result["rcvd_then_sent"], result
        assert result["elapsed"] < TCP_CLOSE
        assert handler_saw(seen, tag) == (1009, 1009)
