"""Sizes of WebSocket messages in bytes, as the wire counts them (UTF-8 for text), computed
only when they matter: most text is ASCII, whose size is its length."""

from __future__ import annotations

__all__ = ["oversize", "size_of"]


def size_of(data: str | bytes) -> int:
    """The size of a message in bytes (UTF-8 for text; ASCII text costs no encoding)."""
    if isinstance(data, str) and not data.isascii():
        return len(data.encode("utf-8", "surrogatepass"))
    return len(data)


def oversize(data: str | bytes, limit: int) -> int:
    """The size in bytes of ``data`` if it is over ``limit``, else 0 (cheap for most text)."""
    if isinstance(data, bytes):
        return len(data) if len(data) > limit else 0
    if len(data) * 4 <= limit:  # UTF-8 takes at most 4 bytes a character
        return 0
    size = len(data.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0
