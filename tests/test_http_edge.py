"""HTTP edge cases over a real server: ambiguous request framing (DESIGN.md, fact 20).

A request with both ``Content-Length`` and ``Transfer-Encoding`` (or a ``Transfer-Encoding`` in
an HTTP/1.0 request) is the shape of request smuggling: a proxy in front that frames the body by
one header and this server by the other disagree on where the next request starts. RFC 9112,
section 6.1, lets a server reject it or answer it, but either way it must close the connection.
trioweb rejects it with 400 and closes, as nginx does (trioweb/_http1_guard.py). The tests speak
raw HTTP/1.1 over TCP and pipeline a second request behind the bad one: it must never be
answered. Nothing sleeps: each read waits for the server, ``trio.fail_after`` is the safety net.
"""

from __future__ import annotations

import logging

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trio
from helpers import HOST, serving

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
