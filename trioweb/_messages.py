"""The ``async for`` over a socket's messages, as a plain async iterator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .exceptions import WebSocketDisconnect

__all__ = ["Messages"]


class Messages:
    """The ``async for`` over a socket: messages until it closes.

    A plain async iterator rather than an async generator: no generator, no finalizer hook.
    Like a trio channel's, it ends when the socket closes, and only then: an error (or a
    cancellation) raised out of one step leaves it usable. A cancellation loses no message; an
    error about a message (wrong type, bad JSON) has consumed that one.
    """

    __slots__ = ("_receive_one",)

    def __init__(self, receive_one: Callable[[], Awaitable[Any]]) -> None:
        self._receive_one: Callable[[], Awaitable[Any]] | None = receive_one

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Any:
        receive_one = self._receive_one
        if receive_one is None:
            raise StopAsyncIteration
        try:
            return await receive_one()
        except WebSocketDisconnect:
            self._receive_one = None
            raise StopAsyncIteration from None
