"""One HTTP/2 frame must not stop the server (docs/hypercorn.md, fact 13).

The guard is trioweb/_hypercorn_guard.py.

hypercorn accepts h2c with prior knowledge on every cleartext port. A client sends a request
body, the app answers without reading it, and the client then sends more of the body: under
hypercorn 0.18.0 that DATA frame raises ``KeyError`` in ``H2Protocol._handle_events`` and the
whole worker stops. These tests do it over a real socket against ``trioweb.serve`` and check
that the server, and even the attacking connection, carry on. Nothing sleeps: each step waits
for the server's reply, with ``trio.fail_after`` as a safety net.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trio
import trio_websocket
from helpers import HOST, Server, serving
from hypercorn.protocol.h2 import H2Protocol

import trioweb
from trioweb import _hypercorn_guard

TIMEOUT = 10  # safety net around each test: a bug fails the test, it hangs nothing


def make_app() -> trioweb.App:
    app = trioweb.App()

    @app.post("/upload")
    async def upload(request: trioweb.Request) -> trioweb.JSONResponse:
        # Answers before reading the body, as a real auth check or size limit would.
        return trioweb.JSONResponse({"error": "no token"}, status_code=401)

    @app.get("/health")
    async def health(request: trioweb.Request) -> trioweb.JSONResponse:
        return trioweb.JSONResponse({"ok": True})

    @app.websocket("/echo")
    async def echo(ws: trioweb.WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)

    return app


@asynccontextmanager
async def h2_client(server: Server) -> AsyncIterator[H2Client]:
    """An h2c connection to ``server``, its preface sent."""
    async with await trio.open_tcp_stream(HOST, server.port) as stream:
        client = H2Client(stream, server)
        client.connection.initiate_connection()
        await client.flush()
        yield client


class H2Client:
    """A bare h2c client (prior knowledge) on a real socket, driven one step at a time."""

    def __init__(self, stream: trio.SocketStream, server: Server) -> None:
        self.stream = stream
        self.server = server
        self.authority = f"{HOST}:{server.port}"
        self.connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: list[h2.events.Event] = []

    async def flush(self) -> None:
        try:
            await self.stream.send_all(self.connection.data_to_send())
        except trio.BrokenResourceError:
            await self.hung_up()

    async def hung_up(self) -> NoReturn:
        # If serve() is crashing, let it finish, so that its error (not one cancelled half-way
        # by this test's own failure) is reported with this one.
        with trio.move_on_after(2):
            await self.server.ended.wait()
        raise AssertionError(f"the server hung up (after {self.events})")

    async def request(self, stream_id: int, method: str, path: str, *, end: bool) -> None:
        headers = [(":method", method), (":path", path), (":scheme", "http")]
        headers.append((":authority", self.authority))
        self.connection.send_headers(stream_id, headers, end_stream=end)
        await self.flush()

    async def receive(self) -> None:
        """Read what the server has sent; keep every event."""
        data = await self.stream.receive_some()
        if not data:
            await self.hung_up()
        self.events.extend(self.connection.receive_data(data))
        await self.flush()  # settings acks, window updates

    def of(self, stream_id: int) -> list[h2.events.Event]:
        return [event for event in self.events if getattr(event, "stream_id", None) == stream_id]

    async def until(self, kind: type[h2.events.Event], stream_id: int) -> None:
        """Read until an event of ``kind`` for ``stream_id`` has arrived."""
        while not any(isinstance(e, kind) for e in self.of(stream_id)):
            await self.receive()

    def ended(self, stream_id: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded) for e in self.of(stream_id))

    def status(self, stream_id: int) -> bytes:
        [response] = [e for e in self.of(stream_id) if isinstance(e, h2.events.ResponseReceived)]
        return dict(response.headers)[b":status"]

    def resets(self, stream_id: int) -> list[h2.events.StreamReset]:
        return [e for e in self.of(stream_id) if isinstance(e, h2.events.StreamReset)]


async def http11_get(port: int, path: str) -> tuple[str, bytes]:
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        raw = b""
        while chunk := await stream.receive_some():
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


@pytest.mark.parametrize("end_request", [False, True], ids=["body-continues", "body-ends"])
async def test_data_on_an_answered_stream_does_not_stop_the_server(end_request: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(make_app()) as server:
            async with h2_client(server) as client:
                # A POST whose body is still to come; the app answers it at once.
                await client.request(1, "POST", "/upload", end=False)
                await client.until(h2.events.StreamEnded, 1)
                assert client.status(1) == b"401"

                # hypercorn has now dropped stream 1; h2 still lets the client send on it.
                client.connection.send_data(1, b"the rest of the body", end_stream=end_request)
                await client.flush()
                # Frames are handled in order: the answer on stream 3 proves the DATA frame
                # on stream 1 was handled, and the connection itself is still served.
                await client.request(3, "GET", "/health", end=True)
                await client.until(h2.events.StreamEnded, 3)
                assert client.status(3) == b"200"
                if end_request:
                    assert client.resets(1) == []  # the request is complete: nothing to stop
                else:
                    # RFC 9113, 8.1: after a complete response, ask the client to stop sending.
                    [reset] = client.resets(1)
                    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR

            # The server still serves everybody else, over HTTP/1.1 and WebSocket.
            status, body = await http11_get(server.port, "/health")
            assert status.split(" ")[:2] == ["HTTP/1.1", "200"]
            assert json.loads(body) == {"ok": True}
            async with trio_websocket.open_websocket_url(
                f"ws://{HOST}:{server.port}/echo", connect_timeout=2, disconnect_timeout=2
            ) as ws:
                await ws.send_message("still here")
                assert await ws.get_message() == "still here"
            assert not server.stopped.is_set()
        await server.stopped.wait()  # serve() returned normally on the shutdown trigger


async def test_a_body_streamed_past_an_early_answer_never_cuts_the_answer_short() -> None:
    """A client uploading while the app answers early: DATA often arrives after hypercorn has
    dropped the stream but before its END_STREAM has gone out. Every answer must still arrive
    whole (no reset before END_STREAM), and the discarded bytes must be credited back, or the
    connection's window would run dry after 64 KiB."""
    body_size = 100_000  # more than the 65,535-byte initial windows
    with trio.fail_after(TIMEOUT):
        async with serving(make_app()) as server:
            async with h2_client(server) as client:
                total = 0
                for stream_id in range(1, 40, 2):
                    await client.request(stream_id, "POST", "/upload", end=False)
                    sent = 0
                    while not client.resets(stream_id) and not (
                        sent == body_size and client.ended(stream_id)
                    ):
                        window = 0
                        if sent < body_size:
                            window = client.connection.local_flow_control_window(stream_id)
                        if window:
                            size = min(window, 16_384, body_size - sent)
                            sent += size
                            total += size
                            end = sent == body_size
                            client.connection.send_data(stream_id, b"x" * size, end_stream=end)
                            await client.flush()
                        else:
                            await client.receive()
                    kinds = [type(event) for event in client.of(stream_id)]
                    assert h2.events.StreamEnded in kinds, client.of(stream_id)
                    if h2.events.StreamReset in kinds:
                        assert kinds.index(h2.events.StreamEnded) < kinds.index(
                            h2.events.StreamReset
                        ), client.of(stream_id)
                    assert client.status(stream_id) == b"401"
                await client.request(41, "GET", "/health", end=True)
                await client.until(h2.events.StreamEnded, 41)
                assert client.status(41) == b"200"
                # The connection's window (65,535 bytes) was refilled again and again.
                assert total > 10 * 65_535


def test_install_is_idempotent() -> None:
    assert _hypercorn_guard.install() is True
    guarded = H2Protocol._handle_events
    original = guarded.__wrapped__  # type: ignore[attr-defined]
    assert not getattr(original, _hypercorn_guard._MARKER, False)
    assert _hypercorn_guard.install() is True
    assert _hypercorn_guard._apply() is True  # as after a reload: the marker stops a re-wrap
    assert H2Protocol._handle_events is guarded


@pytest.fixture
def unguarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard as if never installed in this process; undone after the test."""
    method = H2Protocol._handle_events
    monkeypatch.setattr(H2Protocol, "_handle_events", getattr(method, "__wrapped__", method))
    monkeypatch.setattr(_hypercorn_guard, "_outcome", None)


def fake_version(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)


@pytest.mark.usefixtures("unguarded")
def test_an_unverified_hypercorn_of_the_expected_shape_is_guarded_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_version(monkeypatch, "0.18.9")
    with caplog.at_level(logging.WARNING, logger="trioweb"):
        assert _hypercorn_guard.install() is True
    assert getattr(H2Protocol._handle_events, _hypercorn_guard._MARKER, False)
    assert "hypercorn 0.18.9 is not a version" in caplog.text


@pytest.mark.usefixtures("unguarded")
def test_a_hypercorn_of_another_shape_is_left_alone_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_version(monkeypatch, "0.19.0")

    async def _handle_events(self: H2Protocol, events: list[h2.events.Event]) -> None:
        pass  # a rewrite that no longer looks streams up the way the guard expects

    monkeypatch.setattr(H2Protocol, "_handle_events", _handle_events)
    with caplog.at_level(logging.WARNING, logger="trioweb"):
        assert _hypercorn_guard.install() is False
        assert _hypercorn_guard.install() is False  # decided once, warned once
    assert H2Protocol._handle_events is _handle_events
    assert caplog.text.count("not guarding HTTP/2") == 1
    assert "no longer uses DataReceived, _flush, streams" in caplog.text
