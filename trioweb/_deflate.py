"""permessage-deflate (RFC 7692) with bounded inflation, and the settings that choose it.

hypercorn 0.18 accepts wsproto's ``PerMessageDeflate()`` for every client that offers it, with
context takeover and 15-bit windows, and wsproto inflates each read with no output limit: 64 KiB
on the wire can become 64 MiB in memory before any size check runs (docs/hypercorn.md, facts 16
and 17). This module is trioweb's own extension, written against wsproto's public
:class:`~wsproto.extensions.Extension` interface:

- Inflation is bounded by the message limit. Each read inflates at most what is left of the
  message's budget plus one byte; one byte more than the budget means the message is too big.
  The extension then stops inflating for good (the connection is closing with 1009) and hands
  wsproto nothing more, so the frame parser stays in step and the client's Close reply can still
  be read. :attr:`DeflateExtension.overflowed` tells the stream.
- Negotiation follows :class:`Compression`: no context takeover by default, so a socket holds no
  zlib state between messages (a deflate context with takeover costs ~100-300 KiB a socket).
- A control frame between the fragments of a compressed message does not reset the message's
  state (wsproto's own extension does, and then fails to inflate the next fragment).
- Messages under :attr:`Compression.min_size` bytes go out uncompressed (RFC 7692 lets every
  message choose): deflating a short message costs more CPU than it saves bytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = ["Compression", "DeflateExtension", "negotiate"]

_NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"  # the empty stored block a sender strips from each message (7.2.1)
_PARAMETERS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


@dataclass(frozen=True, slots=True)
class Compression:
    """permessage-deflate settings for an app or a route (``App(compression=...)``).

    ``None`` instead of a ``Compression`` turns compression off: the server declines the
    client's offer and every message travels as it is.

    - ``context_takeover``: keep each direction's zlib context from one message to the next.
      Better ratios for streams of similar messages, at a price of about 40 KiB (the inflate
      window) plus ``2 ** (window_bits + 2)`` + 128 KiB (the deflate state) per socket for as
      long as it is open. Off by default: each message is compressed on its own and a socket
      holds no zlib state between messages.
    - ``window_bits`` (9 to 15): the deflate window of the server's messages, and the largest
      one the server asks clients to use when they let it choose. Smaller windows cost less
      memory and compress long messages less well.
    - ``min_size``: messages shorter than this many bytes are sent uncompressed (Node's ``ws``
      uses the same threshold, 1024). Incoming messages are inflated whatever their size.
    """

    context_takeover: bool = False
    window_bits: int = 15
    min_size: int = 1024

    def __post_init__(self) -> None:
        if not 9 <= self.window_bits <= 15:
            raise ValueError(f"window_bits must be between 9 and 15, not {self.window_bits}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, not {self.min_size}")


def _parse_offer(offer: str) -> dict[str, str | None] | None:
    """The parameters of one permessage-deflate offer, or None if the offer is not one or is
    malformed (unknown or repeated parameters must make the server decline it, RFC 7692 5.1)."""
    name, *parts = (part.strip() for part in offer.split(";"))
    if name != _NAME:
        return None
    parameters: dict[str, str | None] = {}
    for part in parts:
        key, equals, value = (piece.strip() for piece in part.partition("="))
        if key not in _PARAMETERS or key in parameters:
            return None
        parameters[key] = value.strip('"') if equals else None
    return parameters


def _window_bits(value: str | None, *, required: bool) -> int | None:
    """A window-bits value of an offer: an int from 8 to 15, or None if absent or invalid."""
    if value is None:
        return None if required else 15
    if not value.isdigit() or not 8 <= int(value) <= 15:
        return None
    return int(value)


def negotiate(offers: list[str], settings: Compression) -> tuple[DeflateExtension, str] | None:
    """Accept the first acceptable permessage-deflate offer: the extension and its response
    (the ``Sec-WebSocket-Extensions`` value), or None to decline them all."""
    for offer in offers:
        parameters = _parse_offer(offer)
        if parameters is None:
            continue
        response = [_NAME]
        # The server's own direction: its window can always be smaller than the client allows.
        server_bits = settings.window_bits
        if "server_max_window_bits" in parameters:
            allowed = _window_bits(parameters["server_max_window_bits"], required=True)
            if allowed is None or allowed == 8:
                continue  # zlib cannot deflate with a 256-byte window (it would use 512)
            server_bits = min(server_bits, allowed)
            response.append(f"server_max_window_bits={server_bits}")
        server_takeover = settings.context_takeover
        if "server_no_context_takeover" in parameters or not server_takeover:
            server_takeover = False
            response.append("server_no_context_takeover")
        # The client's direction: its window may be lowered only if it offered the parameter.
        client_bits = 15
        if "client_max_window_bits" in parameters:
            offered = _window_bits(parameters["client_max_window_bits"], required=False)
            if offered is None:
                continue
            client_bits = min(offered, settings.window_bits)
            if client_bits < offered or parameters["client_max_window_bits"] is not None:
                response.append(f"client_max_window_bits={client_bits}")
        client_takeover = settings.context_takeover
        if "client_no_context_takeover" in parameters or not client_takeover:
            client_takeover = False
            response.append("client_no_context_takeover")
        extension = DeflateExtension(
            server_window_bits=server_bits,
            client_window_bits=client_bits,
            server_takeover=server_takeover,
            client_takeover=client_takeover,
            min_size=settings.min_size,
        )
        return extension, "; ".join(response)
    return None


class _Inflater(Protocol):
    """What this module uses of a zlib decompression object."""

    @property
    def unconsumed_tail(self) -> bytes: ...

    def decompress(self, data: bytes, /, max_length: int = ...) -> bytes: ...


class _Deflater(Protocol):
    """What this module uses of a zlib compression object."""

    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self, mode: int = ..., /) -> bytes: ...


def _utf8_prefix(data: bytes) -> bytes:
    """``data`` cut before the last character start, so that no character is left half-done
    (assuming valid UTF-8: every character starts within any four bytes in a row)."""
    for index in range(len(data) - 1, max(len(data) - 5, 0), -1):
        if data[index] & 0xC0 != 0x80:
            return data[:index]
    return b""


class DeflateExtension(Extension):
    """The server's side of one negotiated permessage-deflate: inflates what the client sends
    within :attr:`max_message_size` bytes a message, deflates what the server sends."""

    name = _NAME

    def __init__(
        self,
        *,
        server_window_bits: int,
        client_window_bits: int,
        server_takeover: bool,
        client_takeover: bool,
        min_size: int,
    ) -> None:
        self.server_window_bits = server_window_bits
        self.client_window_bits = client_window_bits
        self.server_takeover = server_takeover
        self.client_takeover = client_takeover
        self.min_size = min_size
        #: Inflated bytes allowed in one message; more makes the message too big. The stream
        #: sets it once the app has said its limit (at the accept).
        self.max_message_size: int | None = None
        #: A message went over :attr:`max_message_size`: nothing is inflated any more.
        self.overflowed = False
        self._inflater: _Inflater | None = None
        self._deflater: _Deflater | None = None
        self._frame_is_data = False  # the frame being read is a data frame, not a control one
        self._message_compressed: bool | None = None  # None between messages
        self._message_is_text = False
        self._inflated = 0  # bytes inflated so far in this message
        self._compressing: bool | None = None  # the outgoing message's choice, None between

    def enabled(self) -> bool:
        """Always: this extension exists only once negotiated."""
        return True

    def offer(self) -> bool | str:
        """Servers never offer; clients do."""
        raise NotImplementedError("DeflateExtension is for the server side only")

    # -- inbound ---------------------------------------------------------------------------

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """Check RSV1 (set only on the first frame of a compressed message)."""
        if opcode.iscontrol() or opcode is Opcode.CONTINUATION:
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._frame_is_data = opcode is Opcode.CONTINUATION
        else:
            self._frame_is_data = True
            if self._message_compressed is None:  # (wsproto reports a stray start itself)
                self._message_compressed = rsv.rsv1
                self._message_is_text = opcode is Opcode.TEXT
                self._inflated = 0
                if rsv.rsv1 and self._inflater is None:
                    self._inflater = zlib.decompressobj(-self.client_window_bits)
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate a piece of a compressed message, within the message's budget."""
        if not (self._frame_is_data and self._message_compressed):
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """At the end of a compressed message, inflate the stripped tail."""
        if not self._frame_is_data or not fin:
            return None
        compressed, self._message_compressed = self._message_compressed, None
        if not compressed:
            return None
        data = self._inflate(_TAIL)
        if not self.client_takeover:
            self._inflater = None
        return data

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        if self.overflowed or self._inflater is None:
            return b""
        limit = self.max_message_size
        budget = None if limit is None else limit - self._inflated
        try:
            if budget is None:
                out = self._inflater.decompress(data)
            else:
                # max_length 0 means "no limit" to zlib: budget + 1 is always at least 1.
                out = self._inflater.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if budget is not None and (len(out) > budget or self._inflater.unconsumed_tail):
            self.overflowed = True
            self._inflater = None  # its state is of no use any more, and may be large
            # Hand wsproto a prefix that ends between characters, so that its UTF-8 decoder
            # does not fail the connection (1007) before the client's Close reply is read.
            return _utf8_prefix(out[:budget]) if self._message_is_text else b""
        self._inflated += len(out)
        return out

    # -- outbound --------------------------------------------------------------------------

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """Deflate a data frame of a message long enough to be worth it."""
        if opcode.iscontrol():
            return rsv, data
        if opcode is not Opcode.CONTINUATION:
            self._compressing = not fin or len(data) >= self.min_size
            if self._compressing:
                rsv = RsvBits(True, rsv.rsv2, rsv.rsv3)
        compressing = self._compressing
        if fin:
            self._compressing = None
        if not compressing:
            return rsv, data
        if self._deflater is None:
            self._deflater = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.server_window_bits
            )
        out = self._deflater.compress(data)
        if fin:
            out += self._deflater.flush(zlib.Z_SYNC_FLUSH)
            out = out[: -len(_TAIL)]
            if not self.server_takeover:
                self._deflater = None
        return rsv, out

    def __repr__(self) -> str:
        return (
            f"<DeflateExtension server_window_bits={self.server_window_bits} "
            f"client_window_bits={self.client_window_bits} "
            f"server_takeover={self.server_takeover} client_takeover={self.client_takeover}>"
        )
