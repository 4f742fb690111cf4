"""Sizes of WebSocket messages in bytes, as the wire counts them (UTF-8 for text), computed
only when they matter: most text is ASCII, whose size is its length."""

from __future__ import annotations

__all__ = ["size_of"]


def size_of(data: str | bytes) -> int:
    """The size of a message in bytes (UTF-8 for text; ASCII text costs no encoding)."""
    if isinstance(data, str) and not data.isascii():
        return len(data.encode("utf-8", "surrogatepass"))
    return len(data)
