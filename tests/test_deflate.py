"""permessage-deflate: what the server agrees to, and inflation that never outgrows the limit.

The extension is driven here through wsproto's own frame parser, as hypercorn drives it, with
frames a client would send; over a real server, see test_edge.py and test_wire.py.
"""

from __future__ import annotations

import os
import zlib

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from trioweb import App, Compression
from trioweb._deflate import DeflateExtension, negotiate

DEFAULT = Compression()
TAKEOVER = Compression(context_takeover=True, window_bits=12)


def test_the_default_asks_for_no_context_takeover_both_ways():
    extension, response = negotiate(["permessage-deflate; client_max_window_bits"], DEFAULT)
    assert response == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    )
    assert not extension.server_takeover and not extension.client_takeover


def test_context_takeover_when_asked_for_and_the_client_allows_it():
    offer = "permessage-deflate; client_max_window_bits"
    extension, response = negotiate([offer], TAKEOVER)
    assert response == "permessage-deflate; client_max_window_bits=12"
    assert extension.server_takeover and extension.client_takeover
    assert (extension.server_window_bits, extension.client_window_bits) == (12, 12)


def test_the_clients_own_no_takeover_and_window_limits_are_honoured():
    offer = (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; "
        'client_max_window_bits="11"'
    )
    extension, response = negotiate([offer], TAKEOVER)
    assert response == (
        "permessage-deflate; server_max_window_bits=10; server_no_context_takeover; "
        "client_max_window_bits=11"
    )
    assert not extension.server_takeover and extension.client_takeover
    assert (extension.server_window_bits, extension.client_window_bits) == (10, 11)


def test_no_client_window_parameter_means_the_full_window_and_none_in_the_answer():
    extension, response = negotiate(["permessage-deflate"], Compression(window_bits=10))
    assert "client_max_window_bits" not in response
    assert extension.client_window_bits == 15
    assert extension.server_window_bits == 10


@pytest.mark.parametrize(
    "bad",
    [
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits",  # a value is required
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate with it
        "permessage-deflate; client_max_window_bits=abc",
        "x-webkit-deflate-frame",
    ],
)
def test_malformed_or_unusable_offers_are_declined(bad):
    assert negotiate([bad], DEFAULT) is None


def test_the_first_acceptable_offer_wins():
    offers = ["permessage-deflate; server_max_window_bits=8", "permessage-deflate"]
    extension, response = negotiate(offers, DEFAULT)
    assert "server_max_window_bits" not in response
    assert extension.server_window_bits == 15


def test_settings_are_checked_when_made():
    with pytest.raises(ValueError, match="window_bits"):
        Compression(window_bits=8)
    with pytest.raises(ValueError, match="min_size"):
        Compression(min_size=-1)


def test_apps_and_routes_choose_compression():
    app = App()
    assert app.compression == Compression()

    @app.websocket("/plain", compression=None)
    async def plain(ws): ...

    @app.websocket("/default")
    async def default(ws): ...

    (plain_route, default_route) = app.router.routes
    assert app.websocket_settings(plain_route).compression is None
    assert app.websocket_settings(default_route).compression == Compression()
    assert App(compression=None).compression is None
    with pytest.raises(ValueError, match="close_timeout"):
        App(close_timeout=0)


# -- inbound: wsproto's parser with trioweb's extension ---------------------------------------


def server(limit: int | None, **settings: object) -> tuple[Connection, DeflateExtension]:
    extension, _ = negotiate(["permessage-deflate"], Compression(**settings))  # type: ignore[arg-type]
    extension.max_message_size = limit
    return Connection(ConnectionType.SERVER, [extension]), extension


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame."""
    head = bytearray([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    length = len(payload)
    if length < 126:
        head.append(0x80 | length)
    elif length < 65536:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def messages(connection: Connection, data: bytes) -> list[object]:
    connection.receive_data(data)
    return list(connection.events())


def test_a_compressed_message_within_the_limit_arrives_whole():
    connection, extension = server(1000)
    text = "héllo " * 100
    events = messages(connection, frame(0x1, deflated(text.encode()), rsv1=True))
    assert "".join(e.data for e in events if isinstance(e, TextMessage)) == text
    assert not extension.overflowed


def test_a_deflate_bomb_inflates_no_further_than_the_limit_plus_one():
    limit = 64 * 1024
    connection, extension = server(limit)
    bomb = deflated(bytes(50 * 1024 * 1024))  # 50 MiB of zeros, ~50 KiB on the wire
    assert len(bomb) < 100 * 1024
    events = messages(connection, frame(0x2, bomb, rsv1=True))
    inflated = sum(len(e.data) for e in events if isinstance(e, BytesMessage))
    assert inflated <= limit
    assert extension.overflowed


def test_after_an_overflow_the_parser_still_reads_the_clients_close():
    # The point of not failing inside wsproto: the closing handshake can complete.
    connection, extension = server(1024)
    text = ("ü" * 5000).encode()  # two bytes a character: the cut must not split one
    data = frame(0x1, deflated(text), rsv1=True)
    data += frame(0x1, deflated(b"more after the limit"), rsv1=True)
    data += frame(0x8, (1000).to_bytes(2, "big") + b"ok")
    events = messages(connection, data)
    assert extension.overflowed
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert [(c.code, c.reason) for c in closes] == [(1000, "ok")]


def test_a_fragmented_compressed_message_is_bounded_across_fragments():
    connection, extension = server(10_000)
    payload = deflated(bytes(100_000))
    half = len(payload) // 2
    data = frame(0x2, payload[:half], fin=False, rsv1=True) + frame(0x0, payload[half:])
    messages(connection, data)
    assert extension.overflowed


def test_a_ping_between_fragments_keeps_the_message_inflating():
    connection, _ = server(None)
    payload = deflated(b"abc" * 1000)
    half = len(payload) // 2
    data = (
        frame(0x2, payload[:half], fin=False, rsv1=True)
        + frame(0x9, b"ping")
        + frame(0x0, payload[half:])
    )
    events = messages(connection, data)
    assert b"".join(e.data for e in events if isinstance(e, BytesMessage)) == b"abc" * 1000
    assert any(isinstance(e, Ping) for e in events)


def test_uncompressed_messages_pass_through_and_rsv1_elsewhere_is_a_protocol_error():
    connection, _ = server(100)
    events = messages(connection, frame(0x1, b"plain"))
    assert [e.data for e in events if isinstance(e, TextMessage)] == ["plain"]
    events = messages(connection, frame(0x9, b"x", rsv1=True))  # RSV1 on a control frame
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1002]


def test_a_corrupt_deflate_stream_is_invalid_data():
    connection, _ = server(100)
    events = messages(connection, frame(0x2, b"\xff\xff\xff\xff", rsv1=True))
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1007]


def test_without_context_takeover_each_message_stands_alone():
    connection, extension = server(None)
    for _ in range(3):
        events = messages(connection, frame(0x1, deflated(b"same"), rsv1=True))
        assert [e.data for e in events if isinstance(e, TextMessage)] == ["same"]
    assert extension._inflater is None  # no zlib state held between messages


# -- outbound ----------------------------------------------------------------------------------


def client_inflate(frame_bytes: bytes) -> tuple[bool, bytes]:
    """(RSV1, payload inflated if RSV1) of one unmasked server frame with a short header."""
    rsv1 = bool(frame_bytes[0] & 0x40)
    length = frame_bytes[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = int.from_bytes(frame_bytes[2:4], "big"), 4
    payload = frame_bytes[offset : offset + length]
    if not rsv1:
        return False, payload
    return True, zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


def test_short_messages_go_out_plain_and_long_ones_deflated():
    connection, _ = server(None, min_size=100)
    short = connection.send(TextMessage(data="x" * 99))
    long = connection.send(TextMessage(data="y" * 5000))
    assert client_inflate(short) == (False, b"x" * 99)
    compressed, payload = client_inflate(long)
    assert compressed and payload == b"y" * 5000
    assert len(long) < 100
