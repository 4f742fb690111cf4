"""Bad input over real sockets: each gets its answer, and nothing else breaks."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import helpers
import pytest
import trio
from trio_websocket import open_websocket_url

import trioweb
from trioweb import App, WebSocket
from trioweb.server import dead_peer_timeout

HANDSHAKE = (
    b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def echo_app(after_websocket=None) -> App:
    app = App()
    if after_websocket is not None:
        app.after_websocket(after_websocket)

    @app.websocket("/echo")
    async def echo(ws: WebSocket):
        async for message in ws:
            await ws.send(message)

    return app


@asynccontextmanager
async def serving(after_websocket=None) -> AsyncIterator[int]:
    """The echo app on a real server; yields its port, and checks at the end that the worker
    still serves others."""
    with trio.fail_after(20):
        async with helpers.serving(echo_app(after_websocket)) as server:
            yield server.port
            await still_serving(server.url(scheme="http"))


async def still_serving(url: str) -> None:
    """The worker and its other sockets are untouched: a fresh client still gets its echo."""
    async with open_websocket_url(url.replace("http://", "ws://") + "/echo") as ws:
        await ws.send_message("still here")
        assert await ws.get_message() == "still here"


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh TCP connection; return the server's answer, up to the end of
    its headers (hypercorn may keep the connection open until its keep-alive timeout)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = b""
        while b"\r\n\r\n" not in received and (chunk := await stream.receive_some()):
            received += chunk
        return received


def masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


@pytest.fixture
def no_errors_logged(caplog):
    caplog.set_level(logging.WARNING)
    yield
    errors = [
        r for r in caplog.records if r.name.startswith("trioweb") and r.levelno >= logging.ERROR
    ]
    assert errors == []


async def test_garbage_bytes_on_the_port(no_errors_logged):
    async with serving() as port:
        answer = await exchange(port, b"\x00\xff\x13garbage\r\n\r\n" * 3)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")


async def test_a_malformed_handshake_gets_400(no_errors_logged):
    async with serving() as port:
        no_key = HANDSHAKE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")
        answer = await exchange(port, no_key)
    assert answer.startswith(b"HTTP/1.1 400")


async def test_invalid_utf8_in_a_text_frame_gets_a_close_1007(no_errors_logged):
    # RFC 6455 (8.1) wants the connection failed with 1007. hypercorn 0.18 alone dropped TCP
    # with no Close frame and told the app 1006; trioweb's stream sends the Close, tells the app
    # the same code, and closes TCP. Nothing else is affected.
    ended = trio.Event()
    codes = []

    async def record(ws: WebSocket) -> None:
        codes.append(ws.close_code)
        ended.set()

    async with serving(after_websocket=record) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(HANDSHAKE)
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some()
            assert head.startswith(b"HTTP/1.1 101")
            await stream.send_all(masked_frame(0x1, b"\xff\xfe"))
            rest = head.split(b"\r\n\r\n", 1)[1]
            while chunk := await stream.receive_some():  # up to the server's end of TCP
                rest += chunk
            await ended.wait()
    assert rest[0] == 0x88  # one Close frame, then the end of the stream
    assert int.from_bytes(rest[2:4], "big") == 1007
    assert codes[0] == 1007  # (the check that the server still serves adds its own)


async def test_data_sent_before_the_handshake_is_answered_drops_only_that_client(
    no_errors_logged,
):
    # A client that pipelines frames right behind its upgrade request puts hypercorn's HTTP/1.1
    # state machine in error; whatever that client sees, the worker must go on serving.
    async with serving() as port:
        for _ in range(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(HANDSHAKE + masked_frame(0x1, b"too early"))
                answer = await stream.receive_some()  # hypercorn may keep it open: don't wait
            assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 101"))


async def test_a_client_that_vanishes_mid_frame_is_only_its_own_problem(no_errors_logged):
    async with serving() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(HANDSHAKE)
        assert (await stream.receive_some()).startswith(b"HTTP/1.1 101")
        frame = masked_frame(0x1, b"half of this message never arrives")
        await stream.send_all(frame[:10])
        await stream.aclose()


async def test_a_dead_peer_is_dropped_when_pings_are_on(no_errors_logged):
    # A peer that vanished without a FIN (or just never answers) sends nothing: with
    # ping_interval, hypercorn's read timeout (about two intervals) drops it, and the app is told.
    app = echo_app()
    ended = trio.Event()

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        ended.set()

    with trio.fail_after(20):
        async with helpers.serving(app, ping_interval=0.5) as server:
            stream = await trio.open_tcp_stream(helpers.HOST, server.port)
            async with stream:
                await stream.send_all(HANDSHAKE)
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 101")
                # From here on this client reads nothing and answers no ping. Without pings
                # it would stay connected for ever (and fail_after would fire).
                await ended.wait()


def test_pings_are_on_by_default_every_20_s_and_can_be_turned_off(monkeypatch):
    from trioweb import cli, server

    assert server.serve.__kwdefaults__["ping_interval"] == server.DEFAULT_PING_INTERVAL == 20
    assert server.dead_peer_timeout(20) == 40  # the documented bound
    config = server.make_config("127.0.0.1", 0, graceful_timeout=1, ping_interval=20, options={})
    # The stream drops a peer that answers no ping; no read timeout (it would cut HTTP too).
    assert (config.websocket_ping_interval, config.read_timeout) == (20, None)
    for off in (None, 0):
        config = server.make_config(
            "127.0.0.1", 0, graceful_timeout=1, ping_interval=off, options={}
        )
        assert (config.websocket_ping_interval, config.read_timeout) == (None, None)
    # trioweb run: 20 unless told, and --ping-interval 0 is none at all
    seen: list[object] = []
    monkeypatch.setattr(cli, "_serve_one", lambda target, options, _: seen.append(options))
    monkeypatch.setattr(cli, "load_app", lambda target: App())
    assert cli.main(["run", "x:app"]) == 0
    assert cli.main(["run", "x:app", "--ping-interval", "0"]) == 0
    assert cli.main(["run", "x:app", "--ping-interval", "2.5"]) == 0
    assert [options["ping_interval"] for options in seen] == [20, None, 2.5]  # type: ignore[index]
    assert cli.main(["run", "x:app", "--ping-interval", "-1"]) == 2


async def test_serve_refuses_a_negative_ping_interval():
    import trioweb

    with pytest.raises(ValueError, match="ping_interval"):
        await trioweb.serve(App(), port=0, handle_signals=False, ping_interval=-1)


async def blackholed_peer(
    limit: float, *, read_the_answer: bool
) -> tuple[float, bool, list[int | None]]:
    """Serve a handler that waits on something else than its peer, with serve()'s ping default
    as it is at the call; connect a client that completes the handshake, then never reads,
    answers or closes anything (no FIN: a blackholed socket). Returns how long after its last
    byte the app was told, whether the handler was cancelled, and the close codes it saw.
    ``read_the_answer``: the client reads the 101 (and checks it) before it falls silent."""
    app = App()
    cancelled, ended = trio.Event(), trio.Event()
    codes: list[int | None] = []

    @app.websocket("/echo")
    async def hang(ws: WebSocket):
        await ws.accept()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        codes.append(ws.close_code)
        ended.set()

    with trio.fail_after(limit):
        async with helpers.serving(app) as server:
            stream = await trio.open_tcp_stream(helpers.HOST, server.port)
            async with stream:
                await stream.send_all(HANDSHAKE)
                if read_the_answer:
                    assert (await stream.receive_some()).startswith(b"HTTP/1.1 101")
                last_byte_sent = trio.current_time()
                # Nothing more is read or sent: the server's Pings pile up in the kernel.
                await ended.wait()
                detected = trio.current_time() - last_byte_sent
    return detected, cancelled.is_set(), codes


async def test_a_blackholed_peer_is_dropped_within_the_bound_with_the_default_settings(
    monkeypatch, no_errors_logged
):
    # serve() is called WITHOUT ping_interval: only the default is shortened (20 s is too
    # long for a test), so the default path itself is what is measured.
    import trioweb
    from trioweb.server import dead_peer_timeout

    interval = 0.5
    monkeypatch.setitem(trioweb.serve.__kwdefaults__, "ping_interval", interval)
    bound = dead_peer_timeout(interval)  # 1 s here, 40 s with the real default of 20
    detected, cancelled, codes = await blackholed_peer(bound + 10, read_the_answer=True)
    assert cancelled
    # Dropped two intervals after its last byte (the handshake), not before.
    assert bound - 0.2 <= detected <= bound + 1.0, detected
    assert codes == [1006]  # the connection dropped: no Close frame


async def test_a_live_peer_that_answers_pings_outlives_the_read_timeout(
    monkeypatch, no_errors_logged
):
    # The other side of the bound: a quiet client whose only traffic is its Pongs stays
    # connected through many read timeouts; and the first Ping comes an interval after the
    # accept, not as the socket's first frame.
    import trioweb
    from trioweb.server import dead_peer_timeout

    interval = 0.5
    monkeypatch.setitem(trioweb.serve.__kwdefaults__, "ping_interval", interval)
    app = echo_app()
    with trio.fail_after(20):
        async with helpers.serving(app) as server:
            stream = await trio.open_tcp_stream(helpers.HOST, server.port)
            async with stream:
                await stream.send_all(HANDSHAKE)
                buffer = b""
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive_some()
                assert buffer.startswith(b"HTTP/1.1 101")
                buffer = buffer.split(b"\r\n\r\n", 1)[1]
                accepted, pings = trio.current_time(), 0
                # Pings for three read timeouts: each answered, none missing.
                while trio.current_time() - accepted < 3 * dead_peer_timeout(interval):
                    while len(buffer) < 2:
                        buffer += await stream.receive_some()
                    assert buffer[:2] == b"\x89\x00"  # an empty Ping, nothing else
                    if pings == 0:
                        assert trio.current_time() - accepted >= interval - 0.1
                    buffer, pings = buffer[2:], pings + 1
                    await stream.send_all(masked_frame(0xA, b""))
                assert pings >= 3 * dead_peer_timeout(interval) / interval - 2
                await stream.send_all(masked_frame(0x1, b"still here"))
                while b"still here" not in buffer:
                    buffer += await stream.receive_some()


@pytest.mark.long
async def test_a_blackholed_peer_is_dropped_within_40_s_with_the_real_defaults(no_errors_logged):
    # The same blackholed client, against serve() with nothing shortened: pings every 20 s,
    # dropped within two intervals (40 s) of its last byte, and not before one interval (a
    # live peer always gets a whole interval to answer).
    import trioweb
    from trioweb.server import DEFAULT_PING_INTERVAL, dead_peer_timeout

    # helpers.serving passes no ping_interval: serve()'s own default applies, untouched
    assert trioweb.serve.__kwdefaults__["ping_interval"] == DEFAULT_PING_INTERVAL == 20
    bound = dead_peer_timeout(DEFAULT_PING_INTERVAL)
    detected, cancelled, codes = await blackholed_peer(bound + 20, read_the_answer=False)
    print(f"blackholed peer dropped {detected:.2f} s after its last byte (bound {bound:g} s)")
    assert cancelled
    assert codes == [1006]
    assert DEFAULT_PING_INTERVAL <= detected <= bound + 2.0, detected


async def test_a_slow_http_download_is_not_cut_by_the_pings(no_errors_logged):
    # Pings (and the dead-peer check) are the WebSocket stream's own: an HTTP response that
    # takes many ping intervals, to a client that sends nothing after its request, is whole.
    from trioweb import Response

    interval, chunks = 0.3, 5  # a chunk every interval: 1.5 s, five intervals
    app = App()

    class Trickle(Response):
        async def __call__(self, send, *, head: bool = False) -> None:
            headers = [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for n in range(chunks):
                await trio.sleep(interval)  # a slow producer, not a wait for a condition
                body = f"chunk {n}\n".encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    @app.get("/download")
    async def download(request):
        return Trickle()

    with trio.fail_after(20):
        async with helpers.serving(app, ping_interval=interval) as server:
            stream = await trio.open_tcp_stream(helpers.HOST, server.port)
            async with stream:
                began = trio.current_time()
                await stream.send_all(
                    b"GET /download HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                received = b""
                while chunk := await stream.receive_some():
                    received += chunk
                took = trio.current_time() - began
    assert received.startswith(b"HTTP/1.1 200")
    for n in range(chunks):
        assert f"chunk {n}\n".encode() in received
    assert received.endswith(b"0\r\n\r\n")  # the chunked body's end: not cut
    assert took >= 2 * 2 * interval  # longer than the dead-peer bound, twice


async def test_an_upload_that_stalls_for_several_ping_intervals_is_not_cut(no_errors_logged):
    # What a server-wide read timeout would cut (hypercorn reads nothing while an HTTP/1.1
    # response is in flight, but it does while a request body arrives): a client whose upload
    # stalls for three ping intervals (a phone between cells) still gets its answer.
    interval = 0.3
    app = App()

    @app.post("/upload")
    async def upload(request):
        return f"{len(await request.body())} bytes"

    with trio.fail_after(20):
        async with helpers.serving(app, ping_interval=interval) as server:
            stream = await trio.open_tcp_stream(helpers.HOST, server.port)
            async with stream:
                await stream.send_all(
                    b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    b"Content-Length: 10\r\n\r\nhalf "
                )
                await trio.sleep(3 * interval)  # the stall under test: nothing comes
                await stream.send_all(b"done!")
                received = b""
                while chunk := await stream.receive_some():
                    received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    assert received.endswith(b"10 bytes")


async def test_a_vanished_peer_the_server_is_sending_to_is_dropped_within_the_bound(monkeypatch):
    # A blackholed peer ACKs nothing: the server's sends fill its socket buffer and block (a
    # peer that stops reading does the same, on loopback). The dead-peer check must still drop
    # it within two ping intervals of its last byte, whatever the handler is blocked in (here:
    # a send that cannot complete). The blackhole tests of test_hostile.py send nothing, so
    # their Pings always go out.
    interval = 0.5
    monkeypatch.setitem(trioweb.serve.__kwdefaults__, "ping_interval", interval)
    bound = dead_peer_timeout(interval)
    app = App()
    ended = trio.Event()
    codes: list[int | None] = []

    @app.websocket("/echo")
    async def flood(ws: WebSocket) -> None:
        await ws.accept()
        chunk = "x" * 65536
        for _ in range(10_000):  # far more than any socket buffer holds
            await ws.send(chunk)

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        codes.append(ws.close_code)
        ended.set()

    with trio.fail_after(bound + 4):
        async with helpers.serving(app) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            async with stream:
                await stream.send_all(HANDSHAKE)
                last_byte_sent = trio.current_time()
                await ended.wait()  # nothing is read: the server's sends block
                detected = trio.current_time() - last_byte_sent
    assert codes == [1006]
    assert detected <= bound + 1.0, detected
