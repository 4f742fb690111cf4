"""WebSockets over HTTP/2 (RFC 8441) go through trioweb's stream too.

hypercorn accepts cleartext HTTP/2 with prior knowledge on every port, and creates the same
WebSocket stream for an extended CONNECT as for an HTTP/1.1 upgrade; so any client can reach
the stream this way, and the guarantees must hold here as well: the client's close code reaches
the app, and an oversize message gets its 1009.
"""

from __future__ import annotations

import os

import h2.config
import h2.connection
import h2.events
import h2.settings
import helpers
import trio
from wsproto.frame_protocol import CloseReason

from trioweb import App, WebSocket


def masked(opcode: int, payload: bytes) -> bytes:
    head = bytearray([0x80 | opcode])
    if len(payload) < 126:
        head.append(0x80 | len(payload))
    else:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    mask = os.urandom(4)
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class H2WebSocket:
    """Just enough of an RFC 8441 client over cleartext HTTP/2 for these tests."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.received = b""  # the WebSocket bytes of the server's DATA frames
        self.ended = False  # the server ended its side of the stream
        self.status: bytes | None = None

    async def flush(self) -> None:
        await self.stream.send_all(self.h2.data_to_send())

    async def pump(self) -> None:
        """Read one batch from the socket and handle what it says."""
        data = await self.stream.receive_some()
        if not data:
            self.ended = True
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.status = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                self.received += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                self.ended = True
        await self.flush()

    async def open(self, path: str) -> None:
        self.h2.initiate_connection()
        await self.flush()
        while not self.h2.remote_settings.enable_connect_protocol:
            await self.pump()
        self.h2.send_headers(
            1,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "127.0.0.1"),
                ("sec-websocket-version", "13"),
            ],
        )
        await self.flush()
        while self.status is None:
            await self.pump()

    async def send(self, frame: bytes) -> None:
        self.h2.send_data(1, frame)
        await self.flush()

    async def close_frame(self) -> tuple[int, str]:
        """Wait for the server's Close frame; its code and reason."""
        while True:
            index = self.received.find(b"\x88")
            if index >= 0 and len(self.received) >= index + 2:
                length = self.received[index + 1]
                body = self.received[index + 2 : index + 2 + length]
                if len(body) == length:
                    return int.from_bytes(body[:2], "big"), body[2:].decode()
            assert not self.ended, f"no Close frame in {self.received!r}"
            await self.pump()


def recording_app(seen: list[tuple[int | None, str | None]], done: trio.Event) -> App:
    app = App()

    @app.websocket("/ws", max_message_size=1000)
    async def echo(ws: WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)

    @app.after_websocket
    async def record(ws: WebSocket) -> None:
        seen.append((ws.close_code, ws.close_reason))
        done.set()

    return app


async def test_over_http2_the_clients_close_code_and_reason_reach_the_app():
    seen: list[tuple[int | None, str | None]] = []
    done = trio.Event()
    with trio.fail_after(10):
        async with helpers.serving(recording_app(seen, done)) as server:
            stream = await trio.open_tcp_stream(helpers.HOST, server.port)
            async with stream:
                client = H2WebSocket(stream)
                await client.open("/ws")
                assert client.status == b"200"
                await client.send(masked(0x1, b"hi"))
                while b"hi" not in client.received:
                    await client.pump()
                await client.send(masked(0x8, (4001).to_bytes(2, "big") + b"bye"))
                assert await client.close_frame() == (4001, "bye")  # the server's echo
                await done.wait()
    assert seen == [(4001, "bye")]


async def test_over_http2_an_oversize_message_gets_1009():
    seen: list[tuple[int | None, str | None]] = []
    done = trio.Event()
    with trio.fail_after(10):
        async with helpers.serving(recording_app(seen, done)) as server:
            stream = await trio.open_tcp_stream(helpers.HOST, server.port)
            async with stream:
                client = H2WebSocket(stream)
                await client.open("/ws")
                await client.send(masked(0x2, b"x" * 2000))
                code, reason = await client.close_frame()
                assert code == CloseReason.MESSAGE_TOO_BIG
                assert "limit of 1000 bytes" in reason
                await client.send(masked(0x8, code.to_bytes(2, "big")))  # the client's reply
                await done.wait()
    assert seen[0][0] == 1009
