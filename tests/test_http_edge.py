"""HTTP edge cases over a real server: ambiguous request framing and running out of file
descriptors (docs/hypercorn.md, facts 20 and 21).

A request with both ``Content-Length`` and ``Transfer-Encoding`` (or a ``Transfer-Encoding`` in
an HTTP/1.0 request) is the shape of request smuggling: a proxy in front that frames the body by
one header and this server by the other disagree on where the next request starts. RFC 9112,
section 6.1, lets a server reject it or answer it, but either way it must close the connection.
trioweb rejects it with 400 and closes, as nginx does (trioweb/_http1_guard.py). The tests speak
raw HTTP/1.1 over TCP and pipeline a second request behind the bad one: it must never be
answered. Nothing sleeps: each read waits for the server, ``trio.fail_after`` is the safety net.

A server out of file descriptors cannot accept; trio retries every 0.1 s and used to log a full
traceback each time (trioweb/_accept_log.py). The last test runs ``trioweb run`` with a low
open-file limit, exhausts it, and reads the server's log as it comes. Its only sleeps keep the
outage going for a second, so that trio retries several times while it lasts; everything else
waits for the server's answers or log lines, under ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trio
from helpers import HOST, serving
from trio_websocket import open_websocket_url

import trioweb

TIMEOUT = 10  # safety net around each test: a bug fails the test, it hangs nothing

#: Pipelined behind every request below: if the server answers it, the framing was ambiguous.
SMUGGLED = b"GET /secret HTTP/1.1\r\nHost: localhost\r\n\r\n"


def make_app(calls: list[str]) -> trioweb.App:
    """An app that records which of its handlers ran."""
    app = trioweb.App()

    @app.post("/echo")
    async def echo(request: trioweb.Request) -> trioweb.Response:
        calls.append("echo")
        return trioweb.Response(await request.body())

    @app.get("/secret")
    async def secret(request: trioweb.Request) -> trioweb.PlainTextResponse:
        calls.append("secret")
        return trioweb.PlainTextResponse("smuggled")

    @app.websocket("/ws")
    async def ws(socket: trioweb.WebSocket) -> None:
        calls.append("ws")
        async with socket:
            pass

    return app


Answer = tuple[bytes, dict[bytes, bytes], bytes]  # status line, headers, body


def parse(raw: bytes) -> tuple[list[Answer], bytes]:
    """The complete responses at the start of ``raw`` and the bytes after them.

    Headers come with lower-case names. Every answer in these tests has a Content-Length."""
    found = []
    while b"\r\n\r\n" in raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers[b"content-length"])
        if len(rest) < length:
            break
        found.append((status, headers, rest[:length]))
        raw = rest[length:]
    return found, raw


async def talk(port: int, data: bytes, *, answers: int) -> tuple[list[Answer], bool]:
    """Send ``data`` on a fresh connection and read until ``answers`` responses have come or the
    server has closed the connection; return the responses and whether it closed."""
    async with await trio.open_tcp_stream(HOST, port) as stream:
        await stream.send_all(data)
        received = b""
        while len(parse(received)[0]) < answers:
            chunk = await stream.receive_some()
            if not chunk:
                found, rest = parse(received)
                assert rest == b"", f"an incomplete response: {rest!r}"
                return found, True
            received += chunk
        found, rest = parse(received)
        assert rest == b"", f"more than {answers} responses: {received!r}"
        return found, False


AMBIGUOUS = {
    # The classic CL.TE: a proxy forwarding by Content-Length sends all 40 bytes as one body;
    # a server framing by chunked reads an empty body and then a second request.
    "content-length-then-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked-then-content-length": (
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n"
    ),
    "odd-case-and-zero-length": (
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\ntransfer-encoding: Chunked\r\n"
        b"content-length: 0\r\n\r\n0\r\n\r\n"
    ),
    # RFC 9112, 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    "http-1.0-chunked": (
        b"POST /echo HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    # A WebSocket handshake and an h2c upgrade carrying both headers go no further either.
    "websocket-handshake": (
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "h2c-upgrade": (
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("request_bytes", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
async def test_ambiguous_framing_gets_400_and_the_connection_closes(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    calls: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with serving(make_app(calls)) as server:
            # Before the fix, both requests were answered and the connection kept alive.
            found, closed = await talk(server.port, request_bytes + SMUGGLED, answers=2)
            # One answer: the smuggled request is not answered.
            answered = [(status, headers.get(b"connection")) for status, headers, _ in found]
            assert answered == [(b"HTTP/1.1 400 ", b"close")]
            assert closed
            assert calls == []  # the app never saw either request

            # The server goes on serving everybody else.
            found, _ = await talk(
                server.port,
                b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nok",
                answers=1,
            )
            assert [(status, body) for status, _, body in found] == [(b"HTTP/1.1 200 ", b"ok")]
    # A client's malformed request is its own business: nothing for the server's log.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


WELL_FRAMED = {
    "content-length": b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": (
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("request_bytes", WELL_FRAMED.values(), ids=WELL_FRAMED.keys())
async def test_well_framed_requests_keep_the_connection_alive(request_bytes: bytes) -> None:
    """The check rejects only the ambiguous shapes: chunked uploads and pipelining still work."""
    calls: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with serving(make_app(calls)) as server:
            # A third request on the same connection proves it was kept alive.
            last = b"GET /secret HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            found, _ = await talk(server.port, request_bytes + SMUGGLED + last, answers=3)
            assert [(status, body) for status, _, body in found] == [
                (b"HTTP/1.1 200 ", b"hello"),
                (b"HTTP/1.1 200 ", b"smuggled"),
                (b"HTTP/1.1 200 ", b"smuggled"),
            ]
            assert calls == ["echo", "secret", "secret"]


async def test_http2_rejects_transfer_encoding_itself() -> None:
    """HTTP/2 is not affected (verified, not assumed): frames carry the body, and h2 refuses a
    request with a Transfer-Encoding header (RFC 9113, 8.2.2) before the app sees it. hypercorn
    answers that protocol error by closing the connection, so nothing behind it is served."""
    calls: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with serving(make_app(calls)) as server:
            async with await trio.open_tcp_stream(HOST, server.port) as stream:
                config = h2.config.H2Configuration(
                    client_side=True,  # and let the bad header through on our side
                    validate_outbound_headers=False,
                    normalize_outbound_headers=False,
                )
                client = h2.connection.H2Connection(config)
                client.initiate_connection()
                authority = (":authority", f"{HOST}:{server.port}")
                smuggler = [(":method", "POST"), (":path", "/echo"), (":scheme", "http"), authority]
                smuggler += [("content-length", "40"), ("transfer-encoding", "chunked")]
                client.send_headers(1, smuggler)
                client.send_data(1, b"0\r\n\r\n" + SMUGGLED[:35], end_stream=True)
                secret = [(":method", "GET"), (":path", "/secret"), (":scheme", "http"), authority]
                client.send_headers(3, secret, end_stream=True)
                await stream.send_all(client.data_to_send())
                events: list[h2.events.Event] = []
                while chunk := await stream.receive_some():
                    events.extend(client.receive_data(chunk))
            [goaway] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
            assert goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
            assert not [e for e in events if isinstance(e, h2.events.ResponseReceived)]
            assert calls == []


ROOT = Path(__file__).resolve().parent.parent

#: The server's open-file limit in the test below: low enough to reach with a few connections.
NOFILE = 64

#: How long the test keeps the server out of descriptors: trio retries every 0.1 s meanwhile.
HOLD = 1.0

#: ``trioweb run`` with its open-file limit lowered first (the same ``main()`` as the command).
LIMITED_SERVER = f"""
import resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min({NOFILE}, hard), hard))
from trioweb.cli import main
sys.exit(main())
"""

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

FAILING = re.compile(r"\[WARNING\] cannot accept new connections: accept\(\) failed with EMFILE")
#: trioweb's line, or trio's own (once per retry, with a traceback) if the digest is missing.
EITHER = re.compile(rf"{FAILING.pattern}|accept returned EMFILE")
WORKING = re.compile(
    r"\[WARNING\] accepting connections again, after (\d+) failed accept\(\) calls "
    r"over ([\d.]+) s \(EMFILE\)"
)


class Output:
    """What a subprocess has written to one of its pipes so far, read as it comes."""

    def __init__(self) -> None:
        self.text = ""
        self.ended = False
        self._changed = trio.Event()

    async def pump(self, pipe: trio.abc.ReceiveStream) -> None:
        """Read ``pipe`` to its end (it must be read, or the process blocks on a full pipe)."""
        while chunk := await pipe.receive_some():
            self.text += chunk.decode(errors="replace")
            self._changed.set()
            self._changed = trio.Event()
        self.ended = True
        self._changed.set()

    async def wait_for(self, pattern: re.Pattern[str], count: int = 1) -> list[re.Match[str]]:
        """Wait until ``pattern`` has matched ``count`` times; return the matches."""
        while len(found := list(pattern.finditer(self.text))) < count:
            assert not self.ended, f"the server exited; it wrote:\n{self.text}"
            await self._changed.wait()
        return found


class Clients:
    """Raw clients that each send a WebSocket handshake, and note whether it was answered."""

    def __init__(self) -> None:
        self.streams: list[trio.SocketStream] = []
        self.answered: list[trio.SocketStream] = []
        self._changed = trio.Event()

    async def connect(self, nursery: trio.Nursery, port: int) -> None:
        """Open one more; the kernel completes the TCP handshake even if the server can't
        accept it yet (it waits in the listen backlog)."""
        stream = await trio.open_tcp_stream(HOST, port)
        self.streams.append(stream)
        await stream.send_all(HANDSHAKE)
        nursery.start_soon(self._read_answer, stream)

    async def _read_answer(self, stream: trio.SocketStream) -> None:
        received = b""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            while b"\r\n\r\n" not in received and (chunk := await stream.receive_some()):
                received += chunk
        if received.startswith(b"HTTP/1.1 101 "):
            self.answered.append(stream)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for_answers(self, count: int) -> None:
        """Wait until ``count`` handshakes have been answered."""
        while len(self.answered) < count:
            await self._changed.wait()

    async def close(self, streams: list[trio.SocketStream]) -> None:
        """Close ``streams``: the server sees those clients go and frees their descriptors."""
        for stream in streams:
            await stream.aclose()


async def test_running_out_of_file_descriptors_logs_one_line_per_episode() -> None:
    """Each episode of failing accepts is one WARNING when it starts and one when it ends, with
    the count and the duration, never a traceback; the server serves again afterwards."""
    command = ["run", "examples.echo:app", "--port", "0", "--no-access-log"]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", LIMITED_SERVER, *command],
        cwd=ROOT,
        env=os.environ.copy(),  # PYTHONPATH included: the trioweb under test
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = Output(), Output()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stdout.pump, process.stdout)
            nursery.start_soon(stderr.pump, process.stderr)
            with trio.fail_after(30):
                [announced] = await stdout.wait_for(re.compile(r"http://127\.0\.0\.1:(\d+)"))
            port = int(announced.group(1))

            for episode in (1, 2):  # the second proves that an episode really ends
                clients = Clients()
                async with trio.open_nursery() as readers:
                    try:
                        with trio.fail_after(TIMEOUT):
                            # More clients than descriptors: the last ones wait in the backlog.
                            for _ in range(NOFILE + 16):
                                await clients.connect(readers, port)
                            await stderr.wait_for(EITHER, episode)
                        assert len(FAILING.findall(stderr.text)) == episode, stderr.text
                        # Not a wait for a condition: the outage lasts, trio retries meanwhile.
                        await trio.sleep(HOLD / 2)
                        # A few descriptors free up: waiting clients get in, then accept fails
                        # again. Near the limit accept flaps like this: still one episode.
                        accepted = len(clients.answered)
                        await clients.close(clients.answered[:4])
                        with trio.fail_after(TIMEOUT):
                            await clients.wait_for_answers(accepted + 4)
                        await trio.sleep(HOLD / 2)
                        assert len(FAILING.findall(stderr.text)) == episode, stderr.text
                        assert len(WORKING.findall(stderr.text)) == episode - 1, stderr.text
                    finally:
                        await clients.close(clients.streams)
                with trio.fail_after(TIMEOUT):
                    ended = (await stderr.wait_for(WORKING, episode))[-1]
                failures, seconds = int(ended.group(1)), float(ended.group(2))
                assert failures >= 3, ended.group()  # trio retried, and logged none of it
                assert seconds >= HOLD, ended.group()

                with trio.fail_after(TIMEOUT):
                    async with open_websocket_url(f"ws://{HOST}:{port}/ws") as ws:
                        await ws.send_message(f"after episode {episode}")
                        assert await ws.get_message() == f"after episode {episode}"

            process.send_signal(signal.SIGINT)
            with trio.fail_after(20):
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Traceback" not in stderr.text, stderr.text
    assert "accept returned" not in stderr.text  # trio's own line, once per retry
    lines = [line for line in stderr.text.splitlines() if "accept" in line]
    assert len(lines) == 4, stderr.text  # two episodes, two lines each
