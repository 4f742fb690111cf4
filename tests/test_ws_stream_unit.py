"""trioweb's WebSocket stream on its own, driven as hypercorn's trio worker drives it.

Each :class:`Wire` is one stream with what hypercorn puts around it: its trio ``TaskGroup`` and
``WorkerContext``, a protocol ``send`` that records the stream's events (and, like hypercorn's
HTTP/1 and HTTP/2 protocols, hands a ``StreamClosed`` back to the stream), an ASGI app that
records what it is given, and a wsproto client for the far end of the socket.

These are also the replacements for hypercorn's own stream tests that
``nox -s hypercorn_compat`` leaves out (tests_hypercorn/ws_stream_compat.py says which), and
the counterparts of the ones that exercise hypercorn classes this stream does not use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.protocol.events import Data, EndData, Request, Response, StreamClosed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState as Lifespan
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from trioweb import Compression
from trioweb._types import DEFAULT_CLOSE_TIMEOUT, WIRE_SETTINGS
from trioweb._ws_buffer import MessageBuffer
from trioweb._ws_stream import WebSocketStream

# RFC 6455 (1.3)'s own example key and the accept token it gives.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
HTTP1_HEADERS = [
    (b"host", b"example.com"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
]


class Wire:
    """One :class:`WebSocketStream`, hypercorn's side of it, its app and a client."""

    def __init__(self, task_group: TaskGroup, config: Config | None = None) -> None:
        #: Every event the stream sent to hypercorn's protocol, in order.
        self.sent: list[StreamEvent] = []
        #: Every ASGI event the app received, in order.
        self.received: list[dict[str, Any]] = []
        self.app_returned = False
        self.stream = WebSocketStream(
            self.app,
            config or Config(),
            WorkerContext(None),
            task_group,
            False,
            ("127.0.0.1", 5000),
            ("127.0.0.1", 8000),
            self.protocol_send,
            1,
        )
        self.client: Connection | None = None
        self._data_read = 0  # how many of the stream's Data events the client has read

    async def app(self, scope: Any, receive: Any, send: Any, *spawners: Any) -> None:
        """The app: records what it receives and returns when told of the disconnect, after
        which hypercorn's task group calls the stream's ``app_send(None)``, as it does after
        every ASGI app."""
        while True:
            event = await receive()
            self.received.append(event)
            if event["type"] == "websocket.disconnect":
                self.app_returned = True
                return

    async def protocol_send(self, event: StreamEvent) -> None:
        self.sent.append(event)
        if isinstance(event, StreamClosed):  # hypercorn's protocols close the stream in turn
            await self.stream.handle(StreamClosed(stream_id=event.stream_id))

    # -- driving it -------------------------------------------------------------------------

    async def open(
        self,
        settings: dict[str, Any] | None = None,
        *,
        offer: PerMessageDeflate | None = None,
        http_version: str = "1.1",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Response:
        """The handshake, then the app's accept: the stream's response to it."""
        request_headers = list(HTTP1_HEADERS if http_version == "1.1" else HTTP1_HEADERS[-1:])
        if offer is not None:  # (wsproto's offer() leaves out the extension's name)
            value = f"{offer.name}; {offer.offer()}"
            request_headers.append((b"sec-websocket-extensions", value.encode()))
        await self.stream.handle(
            Request(
                stream_id=1,
                headers=request_headers,
                http_version=http_version,
                method="GET",
                raw_path=b"/chat",
                state=Lifespan({}),
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        assert self.received == [{"type": "websocket.connect"}]
        accept: dict[str, Any] = {"type": "websocket.accept", "headers": headers or []}
        if settings is not None:
            accept[WIRE_SETTINGS] = settings
        await self.stream.app_send(accept)  # type: ignore[arg-type]
        response = self.sent[-1]
        assert isinstance(response, Response)
        extensions = []
        for name, value in response.headers:
            if name == b"sec-websocket-extensions":
                assert offer is not None
                offer.finalize(value.decode())
                extensions.append(offer)
        self.client = Connection(ConnectionType.CLIENT, extensions)
        return response

    async def from_client(self, *events: Event) -> None:
        """The client sends these, in one read of the socket; the app gets what follows."""
        assert self.client is not None
        data = b"".join(self.client.send(event) for event in events)
        await self.raw_from_client(data)

    async def raw_from_client(self, data: bytes) -> None:
        await self.stream.handle(Data(stream_id=1, data=data))
        await trio.testing.wait_all_tasks_blocked()

    def to_client(self) -> list[Event]:
        """What the client reads of what the stream sent since the last call."""
        assert self.client is not None
        data = [event.data for event in self.sent if isinstance(event, Data)]
        for chunk in data[self._data_read :]:
            self.client.receive_data(chunk)
        self._data_read = len(data)
        return list(self.client.events())

    def messages_to_client(self) -> list[str | bytes]:
        """The messages the client reads since the last call."""
        return [event.data for event in self.to_client() if isinstance(event, Message)]

    def frames(self) -> list[bytes]:
        """The raw bytes of each Data event the stream sent."""
        return [event.data for event in self.sent if isinstance(event, Data)]

    def disconnects(self) -> list[dict[str, Any]]:
        return [event for event in self.received if event["type"] == "websocket.disconnect"]

    def closed_tcp(self) -> int:
        """How many times the stream asked hypercorn to close the socket."""
        return sum(isinstance(event, StreamClosed) for event in self.sent)


@pytest.fixture
async def task_group() -> AsyncIterator[TaskGroup]:
    """hypercorn's trio task group of one connection; what is left in it is cancelled at the
    end of the test."""
    async with TaskGroup() as group:
        yield group
        assert group._nursery is not None
        group._nursery.cancel_scope.cancel()


@pytest.fixture
def wire(task_group: TaskGroup) -> Wire:
    return Wire(task_group)


def close_event(code: int, reason: str = "", *, by_server: bool = False) -> dict[str, Any]:
    event = {"type": "websocket.disconnect", "code": code, "reason": reason}
    if by_server:  # the stream closed on its own: the app is told so, for its session line
        event["trioweb.closed_by_server"] = True
    return event


# -- the handshake: trioweb's accept in place of hypercorn's Handshake.accept --------------------


async def test_accept_over_http1_answers_101_with_the_accept_token(wire: Wire) -> None:
    response = await wire.open(headers=[(b"x-extra", b"1")])
    assert response.status_code == 101
    assert response.headers == [
        (b"sec-websocket-accept", ACCEPT),
        (b"upgrade", b"WebSocket"),
        (b"connection", b"Upgrade"),
        (b"x-extra", b"1"),
    ]


async def test_accept_over_http2_answers_200(wire: Wire) -> None:
    response = await wire.open(http_version="2")
    assert (response.status_code, response.headers) == (200, [])
    await wire.from_client(TextMessage("over h2"))
    assert wire.received[-1] == {"type": "websocket.receive", "bytes": None, "text": "over h2"}


# -- permessage-deflate: trioweb's Compression decides -------------------------------------------


async def test_deflate_is_negotiated_without_context_takeover_by_default(wire: Wire) -> None:
    # hypercorn's own stream accepts wsproto's PerMessageDeflate() as offered, with context
    # takeover in both directions; an app that says nothing gets Compression() here.
    response = await wire.open(offer=PerMessageDeflate())
    (extensions,) = [
        value for name, value in response.headers if name == b"sec-websocket-extensions"
    ]
    parameters = [part.strip() for part in extensions.decode().split(";")]
    assert parameters[0] == "permessage-deflate"
    assert "server_no_context_takeover" in parameters
    assert "client_no_context_takeover" in parameters
    # Compressed messages from the client are inflated, each on its own.
    for text in ("a" * 2000, "b" * 3000):
        await wire.from_client(TextMessage(text))
        assert wire.received[-1]["text"] == text


async def test_short_messages_go_out_uncompressed_and_long_ones_compressed(wire: Wire) -> None:
    await wire.open(offer=PerMessageDeflate())  # Compression().min_size is 1024
    await wire.stream.app_send({"type": "websocket.send", "text": "short"})
    await wire.stream.app_send({"type": "websocket.send", "text": "x" * 1024})
    short, long = wire.frames()[-2:]
    assert short[0] == 0x81  # FIN, text, RSV1 clear: sent as it is
    assert long[0] == 0xC1  # FIN, RSV1, text: compressed
    assert len(long) < 100
    assert wire.messages_to_client() == ["short", "x" * 1024]


async def test_compression_none_declines_the_offer(wire: Wire) -> None:
    response = await wire.open({"compression": None}, offer=PerMessageDeflate())
    assert all(name != b"sec-websocket-extensions" for name, _ in response.headers)
    await wire.stream.app_send({"type": "websocket.send", "bytes": b"y" * 4096})
    assert wire.frames()[-1][0] == 0x82  # not compressed


async def test_context_takeover_when_the_app_asks_for_it(wire: Wire) -> None:
    settings = {"compression": Compression(context_takeover=True, min_size=0)}
    response = await wire.open(settings, offer=PerMessageDeflate())
    (extensions,) = [
        value for name, value in response.headers if name == b"sec-websocket-extensions"
    ]
    assert b"no_context_takeover" not in extensions
    await wire.stream.app_send({"type": "websocket.send", "text": "repeat " * 20})
    await wire.stream.app_send({"type": "websocket.send", "text": "repeat " * 20})
    first, second = wire.frames()[-2:]
    assert len(second) < len(first)  # the second refers back into the first
    assert wire.messages_to_client() == ["repeat " * 20] * 2


# -- the message buffer: trioweb's MessageBuffer in place of hypercorn's WebsocketBuffer --------


def test_message_buffer_takes_whole_messages() -> None:
    buffer = MessageBuffer(10)
    assert buffer.add("ab") and buffer.add("c")
    assert buffer.take() == {"type": "websocket.receive", "bytes": None, "text": "abc"}
    assert buffer.add(b"abc")
    assert buffer.take() == {"type": "websocket.receive", "bytes": b"abc", "text": None}
    assert buffer.take() == {"type": "websocket.receive", "bytes": b"", "text": None}


def test_message_buffer_counts_utf8_bytes_and_forgets_a_message_over_its_limit() -> None:
    buffer = MessageBuffer(10)
    assert buffer.add("é" * 5)  # 10 bytes: at the limit
    assert not buffer.add("x")  # hypercorn's raises FrameTooLargeError and keeps the data
    assert (buffer.parts, buffer.size) == ([], 0)
    assert buffer.add(b"0123456789")  # the next message starts from nothing


# -- closes the client starts --------------------------------------------------------------------


async def test_the_clients_close_code_and_reason_reach_the_app(wire: Wire) -> None:
    # hypercorn's own stream tells the app 1006, whatever the client sent.
    await wire.open()
    await wire.from_client(CloseConnection(code=4001, reason="going home"))
    assert wire.to_client() == [CloseConnection(code=4001, reason="going home")]  # the echo
    assert wire.closed_tcp() == 1
    assert wire.disconnects() == [close_event(4001, "going home")]


@pytest.mark.parametrize("accepted", [False, True], ids=["before-accept", "after-accept"])
async def test_stream_closed_without_a_close_frame_is_1006(wire: Wire, accepted: bool) -> None:
    # Replaces hypercorn's test_handle_closed: the same code, and a reason ('' here).
    if accepted:
        await wire.open()
    else:
        await wire.stream.handle(
            Request(
                stream_id=1,
                headers=HTTP1_HEADERS,
                http_version="1.1",
                method="GET",
                raw_path=b"/",
                state=Lifespan({}),
            )
        )
    await wire.stream.handle(StreamClosed(stream_id=1))
    await wire.stream.handle(StreamClosed(stream_id=1))  # told once, however often closed
    await trio.testing.wait_all_tasks_blocked()
    assert wire.stream.closed
    assert wire.disconnects() == [close_event(1006)]


async def test_app_is_told_exactly_once(wire: Wire) -> None:
    # Replaces hypercorn's test_closure: however often the stream is closed after the
    # client's Close, the app gets one websocket.disconnect, with the client's code.
    await wire.open()
    await wire.from_client(CloseConnection(code=1000, reason="bye"))
    await wire.stream.handle(StreamClosed(stream_id=1))
    await wire.stream.handle(StreamClosed(stream_id=1))
    await trio.testing.wait_all_tasks_blocked()
    assert wire.stream.closed
    assert wire.disconnects() == [close_event(1000, "bye")]


# -- messages over the limit ---------------------------------------------------------------------


async def test_a_message_over_the_limit_closes_1009_and_waits_for_the_clients_close(
    wire: Wire,
) -> None:
    # hypercorn's own stream sends 1009 and stops reading: the client's Close is never read.
    await wire.open({"max_message_size": 10})
    await wire.from_client(
        TextMessage("0123456789", message_finished=False), TextMessage("!")
    )  # 11 bytes, the limit is crossed by the second fragment
    assert wire.client is not None
    # What the client sends before it has read the server's Close.
    late = wire.client.send(TextMessage("late")) + wire.client.send(Ping(b"p"))
    (close,) = wire.to_client()
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1009, "message over the limit of 10 bytes")
    assert isinstance(wire.sent[-2], Data) and isinstance(wire.sent[-1], EndData)
    # The app is told at once and returns, and the socket stays open for the client's Close
    # (hypercorn's app_send(None) would close TCP now).
    too_big = close_event(1009, "message over the limit of 10 bytes", by_server=True)
    assert wire.disconnects() == [too_big]
    assert wire.app_returned
    assert wire.closed_tcp() == 0
    assert wire.stream.connection.state is ConnectionState.LOCAL_CLOSING
    # What the client sent in the meantime is read and dropped; then its Close ends it.
    await wire.raw_from_client(late)
    assert wire.to_client() == []  # no Pong once the Close is out
    assert len(wire.received) == 2  # the connect and the disconnect
    await wire.from_client(close.response())
    assert wire.closed_tcp() == 1
    assert wire.to_client() == []
    too_big = close_event(1009, "message over the limit of 10 bytes", by_server=True)
    assert wire.disconnects() == [too_big]


async def test_a_deflate_bomb_is_stopped_at_the_limit(wire: Wire) -> None:
    # wsproto's own extension (hypercorn's choice) inflates all of it before any check.
    await wire.open({"max_message_size": 1000}, offer=PerMessageDeflate())
    await wire.from_client(BytesMessage(b"\0" * 4_000_000))  # 4 MB, some 4 KB deflated
    (close,) = wire.to_client()
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert wire.disconnects()[0]["code"] == 1009
    assert wire.closed_tcp() == 0
    await wire.from_client(close.response())  # the frames are still read in step
    assert wire.closed_tcp() == 1


# -- protocol errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes([0x83, 0x80, 0, 0, 0, 0]), 1002),  # a reserved opcode
        (bytes([0x81, 0x02, 0xFF, 0xFE]), 1002),  # not masked
        (bytes([0x81, 0x82, 0, 0, 0, 0, 0xFF, 0xFE]), 1007),  # text that is not UTF-8
    ],
    ids=["reserved-opcode", "unmasked", "invalid-utf8"],
)
async def test_a_protocol_error_gets_a_close_frame(wire: Wire, frame: bytes, code: int) -> None:
    # hypercorn's own stream drops TCP without a Close frame.
    await wire.open()
    await wire.raw_from_client(frame)
    (close,) = wire.to_client()
    assert isinstance(close, CloseConnection) and close.code == code
    assert wire.closed_tcp() == 1
    (told,) = wire.disconnects()
    assert told["code"] == code and told["reason"] == close.reason


# -- the close timer after the server's Close ----------------------------------------------------


async def test_the_close_timer_ends_a_socket_whose_client_never_answers(
    wire: Wire, autojump_clock: trio.abc.Clock
) -> None:
    await wire.open()
    await wire.stream.app_send({"type": "websocket.close", "code": 1000})
    assert wire.to_client() == [CloseConnection(code=1000, reason="")]
    await trio.sleep(DEFAULT_CLOSE_TIMEOUT - 0.1)
    assert wire.closed_tcp() == 0
    await trio.sleep(0.2)
    assert wire.closed_tcp() == 1
    assert wire.disconnects() == [close_event(1006)]  # no Close frame came back


async def test_the_close_timeout_is_the_apps(wire: Wire, autojump_clock: trio.abc.Clock) -> None:
    await wire.open({"close_timeout": 1.5})
    await wire.stream.app_send({"type": "websocket.close", "code": 4000})
    await trio.sleep(1.4)
    assert wire.closed_tcp() == 0
    await trio.sleep(0.2)
    assert wire.closed_tcp() == 1


async def test_the_clients_close_stops_the_timer(
    wire: Wire, autojump_clock: trio.abc.Clock
) -> None:
    await wire.open()
    await wire.stream.app_send({"type": "websocket.close", "code": 1001, "reason": "restart"})
    await wire.from_client(CloseConnection(code=1001, reason="ok"))
    assert wire.closed_tcp() == 1
    assert wire.disconnects() == [close_event(1001, "ok")]
    await trio.sleep(DEFAULT_CLOSE_TIMEOUT * 2)
    assert wire.closed_tcp() == 1  # the timer did not fire as well


async def test_sends_after_a_close_the_stream_made_are_dropped(wire: Wire) -> None:
    await wire.open({"max_message_size": 1})
    await wire.from_client(BytesMessage(b"too big"))
    (close,) = wire.to_client()
    assert isinstance(close, CloseConnection) and close.code == 1009
    sent = len(wire.sent)
    await wire.stream.app_send({"type": "websocket.send", "text": "late"})
    await wire.stream.app_send({"type": "websocket.close", "code": 1000})
    assert len(wire.sent) == sent  # nothing more on the wire, and no error


async def test_pings_are_answered_and_messages_delivered(wire: Wire) -> None:
    await wire.open()
    await wire.from_client(Ping(b"hi"), BytesMessage(b"payload"))
    assert wire.to_client() == [Pong(b"hi")]
    assert wire.received[-1] == {"type": "websocket.receive", "bytes": b"payload", "text": None}
