"""The message a WebSocket stream is receiving, counted in bytes as it grows.

hypercorn's ``WebsocketBuffer`` appends a frame before it checks the limit and is not cleared
when the check fails (docs/hypercorn.md, fact 15): this one checks first, keeps nothing past
the limit, and is reused for every message of its socket.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MessageBuffer"]


class MessageBuffer:
    """The message being received, counted in bytes as it grows (hypercorn's appends first
    and checks after, and is never cleared when the check fails)."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[Any] = []
        self.size = 0

    def add(self, data: str | bytes) -> bool:
        """Add a piece of the message; False (and nothing kept) once it is over the limit."""
        if isinstance(data, str) and not data.isascii():
            self.size += len(data.encode("utf-8", "surrogatepass"))
        else:
            self.size += len(data)
        if self.size > self.limit:
            self.clear()
            return False
        self.parts.append(data)
        return True

    def take_data(self) -> str | bytes:
        """The whole message; the buffer is emptied."""
        parts = self.parts
        first = parts[0] if parts else b""
        data: str | bytes = first if len(parts) == 1 else first[:0].join(parts)
        self.clear()
        return data

    def take(self) -> dict[str, Any]:
        """The whole message as an ASGI ``websocket.receive`` event; the buffer is emptied."""
        data = self.take_data()
        if isinstance(data, str):
            return {"type": "websocket.receive", "bytes": None, "text": data}
        return {"type": "websocket.receive", "bytes": data, "text": None}

    def clear(self) -> None:
        """Forget the message (the list is kept: no allocation per message)."""
        self.parts.clear()
        self.size = 0
